"""Write a study as a DICOM MR series with exact geometry (used for sample data and DICOMweb uploads)."""

from __future__ import annotations

import datetime
import os

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .constants import RAS_TO_LPS

# LGE is an inversion-recovery gradient echo; the inversion time is chosen on a TI scout to null normal
# myocardium, which 10-15 min after gadolinium at 1.5 T falls at roughly 250-350 ms (Kellman & Arai, JMRI
# 2012;36:529-542). Recorded so that readers (lib/caveats.py) recognise the series as LGE.
LGE_INVERSION_TIME_MS = 300.0


def write_dicom_series(
    image_xyz: np.ndarray,
    affine_ras: np.ndarray,
    folder: str,
    *,
    patient_id: str,
    series_description: str = "LGE SAX PSIR",
    uid_seed: str | None = None,
    inversion_time_ms: float | None = LGE_INVERSION_TIME_MS,
) -> list[str]:
    """Write (x, y, z) int16 voxels as one MR series, one file per short-axis slice.

    Image Position/Orientation (Patient), Pixel Spacing, Slice Thickness and the Frame of Reference
    are set from ``affine_ras`` so that ITK reads back the same grid as from a NIfTI with that affine.

    Args:
        image_xyz: (x, y, z) voxels, written as int16.
        affine_ras: 4x4 voxel-to-RAS affine of ``image_xyz``.
        folder: output folder, created if missing.
        patient_id: Patient ID and Patient's Name.
        series_description: Series Description.
        uid_seed: seed of the study, series, frame-of-reference and instance UIDs (default ``patient_id``),
            so that a rewrite gives the same UIDs.
        inversion_time_ms: Inversion Time; the series is written as inversion-recovery gradient echo
            (Scanning Sequence GR\\IR). None writes a plain gradient echo (GR, no Inversion Time), as a
            cine series would be.

    Returns:
        The written file paths, in slice order.
    """
    os.makedirs(folder, exist_ok=True)
    lps = RAS_TO_LPS @ np.asarray(affine_ras, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_cosines, col_cosines = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    seed = uid_seed or patient_id
    study_uid = generate_uid(entropy_srcs=[seed, "study"])
    series_uid = generate_uid(entropy_srcs=[seed, "series"])
    frame_uid = generate_uid(entropy_srcs=[seed, "frame"])
    today = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    paths = []
    for k in range(image_xyz.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[seed, "slice", str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID = ds.PatientName = patient_id
        ds.Modality, ds.SeriesDescription, ds.StudyDate, ds.SeriesDate = "MR", series_description, today, today
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ np.array([0, 0, k]) + lps[:3, 3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_cosines, *col_cosines)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, then column spacing
        ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
        # Rounded: the last digit of this dot product differed between machines, the only bytes by which a
        # regenerated sample series differed. Geometry comes from Image Position (Patient), not from this.
        ds.SliceLocation = round(float(np.dot(np.cross(row_cosines, col_cosines), ds.ImagePositionPatient)), 6)
        if inversion_time_ms is None:
            ds.ScanningSequence = "GR"
        else:
            ds.ScanningSequence, ds.InversionTime = ["GR", "IR"], float(inversion_time_ms)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(image_xyz.shape[1]), int(image_xyz.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(image_xyz[:, :, k].T.astype(np.int16)).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        path = os.path.join(folder, f"slice_{k:03d}.dcm")
        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths
