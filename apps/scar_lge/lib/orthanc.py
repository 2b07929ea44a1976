"""A private Orthanc DICOMweb store on 127.0.0.1, and sample studies put into it as DICOM MR series.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages, started with a configuration written to a folder
of the caller's choosing, never as the system service: remote access and the DICOM port are off, so
only this machine reaches it. Used by ``scripts/serve.sh --dicomweb`` and by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import requests

ORTHANC_BINARIES = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
INSTALL_HINT = "install Debian's orthanc and orthanc-dicomweb packages (apt-get install orthanc orthanc-dicomweb)"


class OrthancError(RuntimeError):
    """Orthanc is missing, or did not start."""


def find_orthanc() -> str:
    """Path of the Orthanc server binary with its DICOMweb plugin, or :class:`OrthancError` saying how to install."""
    binary = next((b for b in (shutil.which(n) or n for n in ORTHANC_BINARIES) if os.path.isfile(b)), None)
    if binary is None or not os.path.isfile(DICOMWEB_PLUGIN):
        raise OrthancError(f"Orthanc with its DICOMweb plugin is not installed: {INSTALL_HINT}")
    return binary


def write_config(folder: Path, port: int) -> Path:
    """An Orthanc configuration for a private store in ``folder``: local access only, no DICOM port."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "scar_lge",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # requests from other machines are refused
        "AuthenticationEnabled": False,  # reachable from 127.0.0.1 only, as the app itself
        "DicomServerEnabled": False,  # no DICOM (DIMSE) port is opened
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        "SaveJobs": False,
        "HttpTimeout": 60,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Orthanc:
    """A running private Orthanc; ``url`` is its REST root, ``dicomweb`` the DICOMweb root the app is given."""

    process: subprocess.Popen
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_orthanc(folder: Path, port: int = 8042, timeout_s: float = 30.0) -> Orthanc:
    """Start Orthanc on ``port`` with its database in ``folder``; returns once ``/system`` answers."""
    binary = find_orthanc()
    config = write_config(Path(folder), port)
    log = open(Path(folder) / "orthanc.log", "ab")  # noqa: SIM115 - Orthanc writes to it for its lifetime
    process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    orthanc = Orthanc(process, port, Path(folder))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise OrthancError(f"Orthanc exited at start (code {process.returncode}); see {folder}/orthanc.log")
        try:
            if requests.get(f"{orthanc.url}/system", timeout=1).ok:
                return orthanc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    orthanc.stop()
    raise OrthancError(f"Orthanc did not answer on port {port} within {timeout_s:.0f} s; see {folder}/orthanc.log")


def study_name(study: Path) -> str:
    """A study file's or series folder's name without its suffixes (``lge_000.nii.gz`` -> ``lge_000``)."""
    return study.name.split(".")[0]


def study_as_dicom(study: Path, folder: Path) -> list[Path]:
    """The DICOM MR series of one study file (NIfTI) or series folder: the files to store.

    A NIfTI study is written as one MR series on exactly its grid (:func:`lib.dicom_io.write_dicom_series`),
    its UIDs seeded by the study's name, so storing it twice stores the same instances.
    """
    if study.is_dir():
        return sorted(p for p in study.iterdir() if p.is_file())
    import nibabel as nib

    from .dicom_io import write_dicom_series

    image = nib.load(str(study))
    name = study_name(study)
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    return [Path(p) for p in write_dicom_series(np.round(voxels), image.affine, str(folder / name), patient_id=name)]


def store_studies(dicomweb_url: str, studies: list[Path], work: Path) -> dict[str, str]:
    """STOW-RS each study as a DICOM MR series; returns study name -> SeriesInstanceUID."""
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(url=dicomweb_url)
    stored = {}
    for study in studies:
        datasets = [pydicom.dcmread(str(p)) for p in study_as_dicom(study, work)]
        client.store_instances(datasets)
        stored[study_name(study)] = str(datasets[0].SeriesInstanceUID)
    return stored
