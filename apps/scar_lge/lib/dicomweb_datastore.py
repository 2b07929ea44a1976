"""The app's studies on a DICOMweb store (Orthanc): MR series are the studies, DICOM SEG the corrected labels.

Replaces MONAI Label 0.8.5's ``DICOMWebDatastore``, which keeps a series list for two hours, writes SEG
through dcmqi (fails on real series and on scar-free labels), matches segment names to values by
position, reads SEG back cropped to the labelled slices, and counts every SEG of a series as a label.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from cachetools import TTLCache
from dicomweb_client import DICOMwebClient
from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMwebClientX
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from .constants import APP_VERSION
from .datastore import ScarDatastore
from .dicom_seg import label_to_seg, read_series, reversed_slices_suspected, seg_to_label
from .errors import InputError, as_http
from .label_io import check_label, read_geometry
from .names import discard_upload

logger = logging.getLogger(__name__)

T = TypeVar("T")
FINAL = DefaultLabelTag.FINAL.value
SERIES_SUFFIX = ".dicom"  # a downloaded series is a folder <SeriesInstanceUID>.dicom in the mirror
# How long a series or SEG listing is reused: long enough that one request's several datastore calls
# ask Orthanc once, short enough that a study stored or a SEG saved in OHIF shows within seconds.
LISTING_TTL_S = 5.0
MIN_SLICES = 2  # a one-slice series is no short-axis stack


def _slice_count(attributes: dict) -> int | None:
    """Number of Series Related Instances from QIDO, None when the store does not say."""
    count = _tag(attributes, "00201209")
    return int(count) if count else None


class _BoundedSession(requests.Session):
    """Every request with a connect and a read timeout: dicomweb_client sets none, so a store that hangs
    would hold each request that needs it, /info/ included, for as long as the operating system waits."""

    CONNECT_S, READ_S = 3.05, 120.0

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", (self.CONNECT_S, self.READ_S))
        return super().request(*args, **kwargs)


def _tag(ds: dict, tag: str) -> str:
    """A QIDO JSON attribute's first value as text ('' when absent)."""
    value = ds.get(tag, {}).get("Value", [""])
    return str(value[0]) if value else ""


def written_by_bundled_ohif(seg: Dataset) -> bool:
    """A SEG from the unfixed OHIF 3.10 beta of MONAI Label 0.8.5: dcmjs's default device attributes.

    That export puts each painted slice's pixels on the mirror-image slice of the stack (slice k of n on
    slice n - 1 - k; lib/ohif_fixes.py fix 3), so its SEGs are never labels. SEGs exported through this
    app's fixed viewer carry ``lib.ohif_fixes.FIXED_EXPORT_MARK`` instead of version "0".
    """
    return (
        str(seg.get("Manufacturer", "")) == "Unspecified"
        and str(seg.get("ManufacturerModelName", "")) == "Unspecified"
        and str(seg.get("SoftwareVersions", "")) == "0"
    )


class ScarDICOMwebDatastore(ScarDatastore):
    """MR series of a DICOMweb store, with corrected labels saved to it as DICOM SEG.

    - Image ids are SeriesInstanceUIDs, as the OHIF extension sends them. Only MR series with at least
      two slices are studies; asking for another series is answered 422 with the reason.
    - Each series is downloaded once into a mirror folder (a :class:`ScarDatastore`, so every name and
      path check applies), where inference and training read it as a DICOM series folder.
    - A ``final`` label is stored in the DICOMweb store as a SEG first, and only then in the mirror, so
      a failed store loses nothing and leaves no half state. SEGs saved by anyone else (OHIF's export)
      count too: per series the newest SEG is the label, read back onto the series grid.
    - The store unreachable answers 503 naming it; the app keeps serving and recovers when it returns.
    """

    def __init__(self, url: str, mirror: str, client: DICOMwebClient | None = None):
        self.url = url.rstrip("/")
        self._client = client or DICOMwebClientX(url=self.url, session=_BoundedSession())
        # dicomweb_client retries every failed request 5 times with 2-16 s back-off, also when the store
        # refuses the connection: 30 s per call, per request. Its absence is answered at once instead.
        self._client.set_http_retry_params(retry=False)
        os.makedirs(mirror, exist_ok=True)
        self._lock = threading.RLock()  # one download or save of a series at a time
        self._listing: TTLCache = TTLCache(maxsize=8, ttl=LISTING_TTL_S)
        self._listing_lock = threading.Lock()  # TTLCache is not thread-safe; pool threads list at once
        self._seg_problems: dict[str, tuple[str, str]] = {}  # series -> (newest SEG, why it is not its label)
        super().__init__(mirror, auto_reload=False)

    def name(self) -> str:
        return self.url

    # ---- the remote store

    def _remote(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise HTTPException(
                status_code=503, detail=f"DICOMweb store {self.url}: {what} failed (HTTP {status})"
            ) from e
        except requests.RequestException as e:
            raise HTTPException(
                status_code=503,
                detail=f"DICOMweb store {self.url} unreachable while trying to {what}: {type(e).__name__}",
            ) from e

    def _cached(self, key: str, fetch: Callable[[], T]) -> T:
        # One read: between a membership test and a second read the entry may expire (KeyError).
        with self._listing_lock:
            value = self._listing.get(key)
        if value is None:
            value = fetch()
            with self._listing_lock:
                self._listing[key] = value
        return value

    def _forget_listings(self) -> None:
        with self._listing_lock:
            self._listing.clear()

    def remote_series(self) -> dict[str, dict]:
        """SeriesInstanceUID -> QIDO attributes of every MR series in the store."""

        def fetch() -> dict[str, dict]:
            found = self._remote(
                "list MR series", lambda: self._client.search_for_series(search_filters={"Modality": "MR"})
            )
            return {_tag(s, "0020000E"): s for s in found if _tag(s, "0020000E")}

        return self._cached("series", fetch)

    def _seg_series(self) -> dict[str, Dataset]:
        """Referenced image SeriesInstanceUID -> header of its newest SEG (by content date and time)."""

        def fetch() -> dict[str, Dataset]:
            newest: dict[str, tuple[str, Dataset]] = {}
            segs = self._remote(
                "list SEG series", lambda: self._client.search_for_series(search_filters={"Modality": "SEG"})
            )
            for seg in segs:
                study, series = _tag(seg, "0020000D"), _tag(seg, "0020000E")
                meta = self._remote(
                    "read a SEG header", lambda s=study, r=series: self._client.retrieve_series_metadata(s, r)
                )
                for item in meta:
                    header = Dataset.from_json(item)
                    referenced = header.get("ReferencedSeriesSequence")
                    if not referenced:
                        logger.warning("SEG series %s references no series; ignored", series)
                        continue
                    image_series = str(referenced[0].SeriesInstanceUID)
                    when = (
                        f"{header.get('ContentDate', '')}{header.get('ContentTime', '')}{header.get('SeriesDate', '')}"
                    )
                    if image_series not in newest or when > newest[image_series][0]:
                        newest[image_series] = (when, header)
            return {k: v[1] for k, v in newest.items()}

        return self._cached("segs", fetch)

    # ---- studies

    def list_images(self) -> list[str]:
        """MR series that can be studies: one with fewer than :data:`MIN_SLICES` slices is never handed out."""
        counts = {uid: _slice_count(s) for uid, s in self.remote_series().items()}
        return sorted(uid for uid, count in counts.items() if count is None or count >= MIN_SLICES)

    def _series_attributes(self, series_uid: str) -> dict:
        """QIDO attributes of a series of any modality, or 404."""
        listed = self.remote_series().get(series_uid)
        if listed is not None:
            return listed
        found = self._remote(
            "look up a series",
            lambda: self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}),
        )
        if not found:
            raise HTTPException(
                status_code=404, detail=f"unknown image id '{series_uid}': no such series in {self.url}"
            )
        return found[0]

    def get_image_uri(self, image_id: str) -> str:
        series_uid = self._name("image id", image_id)
        folder = os.path.join(self._root, f"{series_uid}{SERIES_SUFFIX}")
        if not os.path.isdir(folder):
            attributes = self._series_attributes(series_uid)
            modality = _tag(attributes, "00080060")
            if modality != "MR":
                raise HTTPException(
                    status_code=422,
                    detail=f"series {series_uid} is {modality or 'of no modality'}, not MR: it cannot be an LGE study",
                )
            count = _slice_count(attributes)
            if count is not None and count < MIN_SLICES:
                raise HTTPException(
                    status_code=422,
                    detail=f"series {series_uid} has {count} slice; a short-axis LGE stack needs at least {MIN_SLICES}",
                )
            self._download(_tag(attributes, "0020000D"), series_uid, folder)
        return super().get_image_uri(series_uid)

    def _download(self, study_uid: str, series_uid: str, folder: str) -> None:
        with self._lock:
            if os.path.isdir(folder):
                return
            partial = tempfile.mkdtemp(prefix=".download-", dir=self._root)  # renamed whole: never half a series
            try:
                instances = self._remote(
                    f"download series {series_uid}", lambda: self._client.retrieve_series(study_uid, series_uid)
                )
                for ds in instances:
                    ds.save_as(os.path.join(partial, f"{ds.SOPInstanceUID}.dcm"))
                try:
                    read_geometry(partial)
                except InputError as e:
                    raise as_http(e, f"series {series_uid} cannot be segmented") from e
                os.rename(partial, folder)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            self.refresh()

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        """What OHIF's Next Sample and Slicer need to open the series, besides the mirror's own info."""
        attributes = self._series_attributes(self._name("image id", image_id))
        study_uid = _tag(attributes, "0020000D")
        info = super().get_image_info(image_id) if image_id in self._datastore.objects else {}
        return {
            **info,
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": image_id,
            "PatientID": _tag(attributes, "00100020"),
            "Modality": _tag(attributes, "00080060"),
            "SeriesDescription": _tag(attributes, "0008103E"),
            # Built here: Orthanc answers its RetrieveURL without the port it listens on.
            "RetrieveURL": f"{self.url}/studies/{study_uid}/series/{image_id}",
        }

    # ---- labels

    def sync_labels(self) -> None:
        """Make the mirror's final labels those of the newest SEG of each series; drop those whose SEG is gone."""
        segs = self._seg_series()
        series = self.remote_series()
        with self._lock:
            for image_id, header in segs.items():
                if image_id not in series:
                    logger.warning(
                        "SEG %s references series %s, which is not an MR series of the store; ignored",
                        header.get("SeriesInstanceUID"),
                        image_id,
                    )
                    continue
                seg_uid = str(header.SeriesInstanceUID)
                if self._mirror_seg(image_id) == seg_uid or self._seg_problems.get(image_id, ("",))[0] == seg_uid:
                    continue  # imported already, or known unreadable
                try:
                    self._import_seg(image_id, str(header.StudyInstanceUID), seg_uid)
                    self._seg_problems.pop(image_id, None)
                except (HTTPException, InputError) as e:
                    # The newest SEG is the label; when it cannot be read, no older one stands in for it
                    # silently: the series has no label until it is fixed, and asking for it says why.
                    reason = f"its newest SEG {seg_uid} cannot be read: {getattr(e, 'detail', e)}"
                    logger.warning("series %s: %s", image_id, reason)
                    self._seg_problems[image_id] = (seg_uid, reason)
                    if self._mirror_seg(image_id):
                        self._drop_mirror_label(image_id, FINAL)
            for image_id in list(self._datastore.objects):
                if image_id not in series:
                    # Gone from the store (deleted, or no longer MR): its mirror copy and labels go too.
                    logger.info("series %s is gone from the store; dropped from the mirror", image_id)
                    self._drop_from_mirror(image_id)
                    continue
                if self._mirror_seg(image_id) and image_id not in segs:
                    logger.info("the SEG of series %s is gone from the store; its label is dropped", image_id)
                    self._drop_mirror_label(image_id, FINAL)

    # The mirror is changed below LocalDatastore's own remove_* methods, which ask get_label_uri (and so
    # would sync again, from inside a sync).

    def _drop_mirror_label(self, image_id: str, tag: str) -> None:
        path = LocalDatastore.get_label_uri(self, image_id, tag)
        if path and os.path.exists(path):
            os.remove(path)
        self.refresh()

    def _drop_from_mirror(self, image_id: str) -> None:
        obj = self._datastore.objects.get(image_id)
        for tag in list(obj.labels) if obj else []:
            self._drop_mirror_label(image_id, tag)
        shutil.rmtree(os.path.join(self._root, f"{image_id}{SERIES_SUFFIX}"), ignore_errors=True)
        self.refresh()

    def _mirror_seg(self, image_id: str) -> str:
        obj = self._datastore.objects.get(image_id)
        label = obj.labels.get(FINAL) if obj else None
        return (label.info or {}).get("seg_series_uid", "") if label else ""

    def _import_seg(self, image_id: str, study_uid: str, seg_uid: str) -> None:
        image_dir = self.get_image_uri(image_id)
        seg = self._remote(f"download SEG {seg_uid}", lambda: self._client.retrieve_series(study_uid, seg_uid))
        if written_by_bundled_ohif(seg[0]):
            raise InputError(
                "it was written by an unfixed OHIF 3.10 beta ('Export DICOM SEG' of the viewer MONAI Label 0.8.5 "
                "ships), which stores the painted slices in reverse order; export it again from this server's "
                "/ohif/, or save the correction from 3D Slicer"
            )
        geometry = read_geometry(image_dir)
        label = seg_to_label(seg[0], read_series(image_dir), geometry)
        previous_uri = LocalDatastore.get_label_uri(self, image_id, FINAL)
        if previous_uri and reversed_slices_suspected(label, check_label(previous_uri, image_dir)):
            raise InputError(
                "its slices look reversed against the label it corrects (it matches that label only when "
                "flipped along the stack); save the correction from 3D Slicer instead"
            )
        self._store_checked_label(image_id, image_dir, label, FINAL, {"seg_series_uid": seg_uid, "source": "DICOM SEG"})

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if label_tag != FINAL:  # predictions ('original') stay in the mirror; only corrections go to the store
            return super().save_label(image_id, label_filename, label_tag, label_info)
        try:
            return self._save_final_label(image_id, label_filename, label_info)
        except BaseException:
            discard_upload(label_filename)  # a refused upload goes at once, as in ScarDatastore.save_label
            raise

    def _save_final_label(self, image_id: str, label_filename: str, label_info: dict[str, Any]) -> str:
        with self._lock:
            image_dir = self.get_image_uri(image_id)
            if not image_dir:
                raise HTTPException(status_code=404, detail=f"unknown image id '{image_id}'")
            try:
                label = check_label(label_filename, image_dir)
                seg = label_to_seg(
                    label, read_series(image_dir), read_geometry(image_dir), software_version=f"scar_lge {APP_VERSION}"
                )
            except InputError as e:
                raise as_http(e, "label not saved") from e
            # The store first: if it fails, the mirror keeps the previous label and nothing is half saved.
            self._remote("store the SEG", lambda: self._client.store_instances([seg]))
            self._forget_listings()
            info = {**(label_info or {}), "seg_series_uid": str(seg.SeriesInstanceUID), "source": "DICOM SEG"}
            return self._store_checked_label(image_id, image_dir, label, FINAL, info)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        if label_id not in self.remote_series():
            raise HTTPException(status_code=404, detail=f"unknown image id '{label_id}': no such series in {self.url}")
        if label_tag == FINAL:
            self.sync_labels()
            if label_id in self._seg_problems:
                raise HTTPException(
                    status_code=422, detail=f"series {label_id} has no usable label: {self._seg_problems[label_id][1]}"
                )
        return super().get_label_uri(label_id, label_tag)

    def get_labeled_images(self, label_tag: str | None = None, labels=None) -> list[str]:
        self.sync_labels()
        listed = set(self.list_images())
        return [i for i in super().get_labeled_images(label_tag, labels) if i in listed]

    def get_unlabeled_images(self, label_tag: str | None = None, labels=None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [i for i in self.list_images() if i not in labelled]

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        self.sync_labels()
        listed = set(self.list_images())
        return [d for d in super().datalist(full_path) if self._to_id(os.path.basename(d["image"]))[0] in listed]

    def json(self) -> dict[str, Any]:
        """The mirror's index, plus every MR series of the store not downloaded yet (``GET /datastore/?output=all``)."""
        dump = super().json()
        objects = dump.setdefault("objects", {})
        for series_uid in self.list_images():
            objects.setdefault(series_uid, {"image": {"info": {"SeriesInstanceUID": series_uid}}, "labels": {}})
        return dump

    def status(self) -> dict[str, Any]:
        """Counts for ``/info/``; with the store unreachable, None and the reason, so /info/ still answers."""
        try:
            return super().status()
        except HTTPException as e:
            return {"total": None, "completed": None, "label_tags": {}, "reachable": False, "reason": e.detail}
