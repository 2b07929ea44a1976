"""DICOM SEG for scar labels: a label map written as a SEG of its MR series, and a SEG read back onto it.

Written with highdicom, not MONAI Label 0.8.5's dcmqi path: dcmqi's ``itkimage2segimage`` aborted on
the real Sunnybrook series and on missing coding schemes (MONAI Label #1854), and 0.8.5 numbers segments
by their order among the values present (scar became 2 when myocardium was absent), gave every class
the same red (#1751) and refused a label without foreground. Here a segment's number IS its label
value, every segment carries a coded concept and its own colour, and an empty label is a valid SEG.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA
from skimage.color import rgb2lab

from .constants import LABELS, LV_CAVITY, MVO, MYOCARDIUM, SCAR
from .errors import InputError
from .label_io import Geometry
from .metrics import dice

logger = logging.getLogger(__name__)

MANUFACTURER = "scar_lge"
SEG_SERIES_NUMBER = 300


@dataclass(frozen=True)
class SegmentCode:
    """One label value as a DICOM segment: name, coded concept and display colour."""

    name: str  # the app's label name; OHIF and Slicer show it as the segment's label
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept
    region: hd.sr.CodedConcept | None
    rgb: tuple[int, int, int]


def _sct(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, "SCT", meaning)


# Anatomical colours, one per class, far apart so that no two are confused on a grey LGE image
# (MONAI Label 0.8.5 drew myocardium and MVO in nearly the same magenta): blood red, muscle salmon,
# enhanced scar bright yellow, and MVO, the dark no-reflow core, blue.
SEGMENTS: dict[int, SegmentCode] = {
    LV_CAVITY: SegmentCode(
        "lv_cavity",
        _sct("85756007", "Tissue"),
        _sct("87612001", "Blood"),
        _sct("87878005", "Left Ventricle"),
        (200, 40, 40),
    ),
    MYOCARDIUM: SegmentCode(
        "myocardium",
        _sct("123037004", "Anatomical Structure"),
        _sct("49848007", "Left Ventricle Myocardium"),
        None,
        (240, 160, 120),
    ),
    SCAR: SegmentCode(
        "scar",
        _sct("49755003", "Morphologically Abnormal Structure"),
        _sct("12402003", "Scar tissue"),
        _sct("49848007", "Left Ventricle Myocardium"),
        (255, 235, 0),
    ),
    MVO: SegmentCode(
        "mvo",
        _sct("49755003", "Morphologically Abnormal Structure"),
        _sct("26036001", "Obstruction"),  # microvascular obstruction (no-reflow) inside the infarct
        _sct("49848007", "Left Ventricle Myocardium"),
        (30, 110, 255),
    ),
}
assert {c.name for c in SEGMENTS.values()} == set(LABELS) - {"background"}
assert codes.SCT.LeftVentricleMyocardium.value == "49848007"  # the codes above follow pydicom's dictionary


def label_colors() -> dict[str, list[int]]:
    """Label name -> sRGB 0-255, as every viewer should draw it (``label_colors`` in ``/info/``).

    The SEGs carry these colours, the served OHIF takes them, and Slicer takes them through
    ``scripts/slicer_colours.py`` (its MONAI Label plugin colours segments from its own table).
    """
    return {code.name: list(code.rgb) for code in SEGMENTS.values()}


def rgb_to_dicom_lab(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """sRGB 0-255 -> DICOM's Recommended Display CIELab Value (PS3.3 C.10.7.1.1): L*, a*, b* scaled to 0-65535.

    CIELab under D65, as dcmjs (OHIF) and Slicer convert it back; the conversion is scikit-image's.
    """
    lab = rgb2lab(np.asarray(rgb, float)[None, None] / 255.0)[0, 0]
    return (
        int(round(lab[0] * 65535 / 100)),
        int(round((lab[1] + 128) * 65535 / 255)),
        int(round((lab[2] + 128) * 65535 / 255)),
    )


def read_series(series_dir: str) -> list[Dataset]:
    """The single-frame instances of a series folder (headers only), as highdicom needs its sources."""
    instances = []
    for name in sorted(os.listdir(series_dir)):
        path = os.path.join(series_dir, name)
        if os.path.isfile(path):
            try:
                instances.append(pydicom.dcmread(path, stop_before_pixels=True))
            except pydicom.errors.InvalidDicomError:
                continue
    if not instances:
        raise InputError(f"no DICOM instance in {os.path.basename(series_dir)}")
    return instances


# Type 2 attributes of the patient and study modules, which highdicom copies from the source into the
# SEG: present-but-empty is valid DICOM, and exported or synthetic series often lack some of them.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


_DATES_COPIED = ("PatientBirthDate", "StudyDate", "SeriesDate", "ContentDate")


def _valid_date(value) -> bool:
    try:
        DA(str(value or ""))
        return True
    except ValueError:
        return False


def _as_sources(instances: list[Dataset]) -> list[Dataset]:
    """Copies of the headers that highdicom accepts as one series' sources.

    Missing Type 2 attributes and partial dates become empty. Slices carrying different Frames of Reference (anonymisers
    give each Sunnybrook slice its own) get the first slice's: :func:`slice_order` has already shown
    that every slice lies on one grid, and the SEG references each slice by its SOP Instance UID.
    """
    frames = {str(ds.get("FrameOfReferenceUID", "")) for ds in instances}
    if len(frames) > 1:
        logger.warning("series slices carry %d Frames of Reference; the SEG uses the first slice's", len(frames))
    sources = []
    for ds in instances:
        ds = copy.copy(ds)  # the caller's headers stay as read
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        for keyword in _DATES_COPIED:
            if keyword in ds and not _valid_date(ds.get(keyword)):
                ds.__setattr__(keyword, "")  # a partial date ('20120000') highdicom cannot copy
        if len(frames) > 1:
            ds.FrameOfReferenceUID = instances[0].FrameOfReferenceUID
        sources.append(ds)
    return sources


def slice_order(instances: list[Dataset], geometry: Geometry) -> list[int]:
    """The slice index (z of ``geometry``, the grid ITK read the series onto) of each instance.

    Each instance's Image Position (Patient) must fall on the grid's in-plane origin and on a whole
    slice, and its rows and columns must run along the grid's x and y; otherwise the label would land
    on other pixels than the annotator saw, so this refuses instead.
    """
    direction = np.asarray(geometry.direction, float).reshape(3, 3)
    spacing, origin = np.asarray(geometry.spacing, float), np.asarray(geometry.origin, float)
    order = []
    for ds in instances:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], float)
        if not (
            np.allclose(orientation[:3], direction[:, 0], atol=1e-3)
            and np.allclose(orientation[3:], direction[:, 1], atol=1e-3)
        ):
            raise InputError("a slice of this series is oriented differently from the series grid")
        index = direction.T @ (np.asarray([float(v) for v in ds.ImagePositionPatient], float) - origin) / spacing
        k = int(round(index[2]))
        if not (np.allclose(index[:2], 0, atol=1e-2) and abs(index[2] - k) < 1e-2 and 0 <= k < geometry.size[2]):
            raise InputError(
                f"a slice of this series does not lie on the series grid (voxel index {index.round(3).tolist()})"
            )
        order.append(k)
    if sorted(order) != list(range(geometry.size[2])):
        raise InputError(f"this series has {len(instances)} slices for a grid of {geometry.size[2]}")
    return order


def label_to_seg(
    label_xyz: np.ndarray,
    instances: list[Dataset],
    geometry: Geometry,
    *,
    software_version: str,
    description: str = "scar_lge label",
    creator: str | None = None,
) -> Dataset:
    """A DICOM SEG of ``instances`` holding ``label_xyz``; segment number = label value, all four described.

    Shape: label_xyz (x, y, z) on ``geometry``, the grid ITK reads the series onto (lib.label_io).
    """
    unknown = set(np.unique(label_xyz).tolist()) - {0, *SEGMENTS}
    if unknown:
        raise InputError(f"label values {sorted(unknown)} are not scar_lge labels ({dict(LABELS)})")
    order = slice_order(instances, geometry)
    frames = np.stack([label_xyz[:, :, k].T for k in order]).astype(np.uint8)  # (instances, rows, cols)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="scar_lge", family=codes.cid7162.ArtificialIntelligence, version=software_version
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=code.name,
            segmented_property_category=code.category,
            segmented_property_type=code.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[code.region] if code.region else None,
        )
        for value, code in sorted(SEGMENTS.items())
    ]
    seg = hd.seg.Segmentation(
        source_images=_as_sources(instances),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="scar_lge",
        software_versions=software_version,
        device_serial_number="0",
        series_description=description,
        content_label="SCAR_LGE",
        content_creator_name=creator,
        # Every frame kept, empty or not: a scar-free (or empty) label is a real answer, and a reader
        # then finds one frame per slice and segment.
        omit_empty_frames=False,
    )
    for item in seg.SegmentSequence:
        item.RecommendedDisplayCIELabValue = list(rgb_to_dicom_lab(SEGMENTS[int(item.SegmentNumber)].rgb))
    return seg


def _segment_value(item: Dataset) -> int | None:
    """Label value of a SEG segment: by its name when it is one of ours (OHIF numbers its own way), else by code."""
    name = str(item.get("SegmentLabel", "")).strip().lower()
    for value, code in SEGMENTS.items():
        if name == code.name:
            return value
    try:
        property_type = str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue)
    except (AttributeError, IndexError):
        return None
    matches = [v for v, c in SEGMENTS.items() if c.property_type.value == property_type]
    return matches[0] if len(matches) == 1 else None


def _check_frame_positions(seg: Dataset, instances: list[Dataset], tolerance_mm: float = 0.01) -> None:
    """Each SEG frame lies on the slice it names as its source: same Image Position (Patient).

    OHIF writes positions as 16-character decimal strings, so they match to about 1e-4 mm, not exactly.
    """
    positions = {str(ds.SOPInstanceUID): np.asarray([float(v) for v in ds.ImagePositionPatient]) for ds in instances}
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        try:
            source = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            position = np.asarray([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        except (AttributeError, IndexError):
            continue  # a frame without a position or source is placed by highdicom's own rules
        if source in positions and np.abs(position - positions[source]).max() > tolerance_mm:
            raise InputError(
                f"a SEG frame lies {np.abs(position - positions[source]).max():.3f} mm from the slice it was drawn on"
            )


def seg_to_label(seg_dataset: Dataset, instances: list[Dataset], geometry: Geometry) -> np.ndarray:
    """The label a SEG holds, on the series grid; (x, y, z) uint8.

    Segments map to label values by name or coded type, whatever their numbers; where segments overlap
    (OHIF segments may), the higher value wins: MVO over scar over myocardium over cavity, since each is
    part of the one below it in the EMIDEC scheme.
    """
    try:
        seg = hd.seg.Segmentation.from_dataset(seg_dataset, copy=False)
    except (AttributeError, ValueError, KeyError) as e:
        raise InputError(f"not a readable DICOM SEG: {e}") from e
    values = {}
    for item in seg.SegmentSequence:
        value = _segment_value(item)
        if value is None:
            raise InputError(
                f"SEG segment {item.SegmentNumber} '{item.get('SegmentLabel', '')}' is not a scar_lge label "
                f"(expected one of {[c.name for c in SEGMENTS.values()]})"
            )
        values[int(item.SegmentNumber)] = value
    order = slice_order(instances, geometry)
    uids = [str(ds.SOPInstanceUID) for ds in instances]
    referenced = {
        str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence
    }
    if not referenced & set(uids):
        raise InputError("this SEG references none of the series' slices")
    numbers = sorted(values)
    _check_frame_positions(seg, instances)
    try:
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=numbers,
            combine_segments=False,
            skip_overlap_checks=True,
            # OHIF's SEG export leaves Spatial Locations Preserved out; _check_frame_positions has shown
            # that each frame lies where its source slice does, which is what that attribute would say.
            ignore_spatial_locations=True,
        )  # (instances, rows, cols, segments)
    except (RuntimeError, ValueError, KeyError, AttributeError) as e:
        raise InputError(f"this SEG's frames cannot be matched to the series' slices: {e}") from e
    label = np.zeros(tuple(geometry.size), np.uint8)
    for j in sorted(range(len(numbers)), key=lambda j: values[numbers[j]]):
        for i, k in enumerate(order):
            label[:, :, k][masks[i, :, :, j].T > 0] = values[numbers[j]]
    return label


def reversed_slices_suspected(label: np.ndarray, previous: np.ndarray, margin: float = 0.2) -> bool:
    """True when ``label`` matches ``previous`` far better with its slice order reversed than as it is.

    A correction is a small edit of the label it was drawn over, so it overlaps that label almost
    everywhere. A writer that puts slices in reverse order (as the OHIF 3.10 beta bundled with MONAI
    Label 0.8.5 does: positions and source references right, pixel data mirrored along the stack)
    makes a SEG that matches its base only when flipped back, which this detects, so it is refused
    instead of trained on, whatever tool wrote it.

    Math: with F(a, b) the Dice of the heart (labels > 0) of a and b, suspected when
    F(flip_z(label), previous) - F(label, previous) > ``margin``. Needs at least 2 slices.

    Shape: both (x, y, z) on the same grid.
    """
    if label.shape != previous.shape or label.shape[2] < 2 or not previous.any() or not label.any():
        return False
    heart, base = label > 0, previous > 0
    return dice(heart[:, :, ::-1], base) - dice(heart, base) > margin
