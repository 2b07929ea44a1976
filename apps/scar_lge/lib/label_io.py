"""Reading study geometry, checking uploaded labels, and writing labels on their image's grid."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from .constants import NUM_CLASSES
from .errors import InputError

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Geometry may differ by float rounding between writers (NIfTI stores float32), not by more.
GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a study as ITK sees it: size (x, y, z), spacing mm, origin mm (LPS), direction."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def matches(self, other: Geometry) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=GEOMETRY_TOLERANCE, atol=GEOMETRY_TOLERANCE)
            and np.allclose(self.origin, other.origin, rtol=GEOMETRY_TOLERANCE, atol=GEOMETRY_TOLERANCE)
            and np.allclose(self.direction, other.direction, atol=GEOMETRY_TOLERANCE)
        )

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        """The grid of an image as ITK read it, all of its dimensions."""
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
        )

    def describe(self) -> str:
        spacing = ", ".join(f"{s:.3f}" for s in self.spacing)
        origin = ", ".join(f"{o:.2f}" for o in self.origin)
        return f"size {list(self.size)}, spacing [{spacing}] mm, origin [{origin}] mm"


def _is_nifti(path: str) -> bool:
    return path.endswith(NIFTI_SUFFIXES)


def _refuse_repeated_positions(files: list[str]) -> None:
    """A short-axis stack has one frame per slice position; cine or repeated series have several."""
    positions = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        positions.add(tuple(round(float(v), 2) for v in ds.get("ImagePositionPatient", [])))
    if len(positions) < len(files):
        raise InputError(
            f"this DICOM series has {len(files)} frames at only {len(positions)} slice positions "
            "(a multi-phase cine or repeated acquisition); export one frame per slice position"
        )


def read_itk(path: str, *, header_only: bool = False) -> sitk.Image:
    """Read a file or a DICOM series folder with ITK; raise :class:`InputError` on anything unreadable."""
    if not os.path.exists(path):
        raise InputError(f"file not found: {os.path.basename(path)}", 404)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError("the uploaded file is empty")
    try:
        if os.path.isdir(path):
            series = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path)
            if not series:
                raise InputError(f"no DICOM series found in folder {os.path.basename(path)}")
            _refuse_repeated_positions(series)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(series)
            return reader.Execute()
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        if header_only:
            reader.ReadImageInformation()
            return reader
        return reader.Execute()
    except RuntimeError as e:
        raise InputError(f"cannot read {os.path.basename(path)} as an image: {str(e).strip().splitlines()[-1]}") from e


def read_geometry(path: str) -> Geometry:
    """Geometry of a study. NIfTI spacing comes from pixdim, as ITK reads it (see the EMIDEC header trap)."""
    image = read_itk(path, header_only=not os.path.isdir(path))
    size = tuple(int(s) for s in image.GetSize())
    components = (
        image.GetNumberOfComponents()
        if isinstance(image, sitk.ImageFileReader)
        else image.GetNumberOfComponentsPerPixel()
    )
    if components != 1:
        raise InputError(f"an LGE study has one value per voxel; this image has {components} (colour or vector)")
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3 or min(size) < 1:
        raise InputError(
            f"an LGE study must be a 3D short-axis stack (rows x cols x slices); got a {len(size)}D image "
            f"of size {list(size)}"
        )
    if size[0] < 32 or size[1] < 32:
        raise InputError(f"in-plane size {size[:2]} is too small for a short-axis LGE slice (at least 32 x 32)")
    return Geometry(
        size=size,
        spacing=tuple(image.GetSpacing())[:3],
        origin=tuple(image.GetOrigin())[:3],
        direction=tuple(np.asarray(image.GetDirection()).reshape(len(image.GetSpacing()), -1)[:3, :3].ravel()),
    )


def read_voxels(path: str) -> np.ndarray:
    """A study's intensities as (x, y, z) float32: the axis order of :func:`check_label` and :func:`write_label_like`.

    Shape: (x, y, z) as ITK indexes the grid (z is the slice axis of a short-axis stack); call
    :func:`read_geometry` first to refuse images that are not 3D stacks.
    """
    values = sitk.GetArrayFromImage(read_itk(path))  # ITK gives (z, y, x); a 4D study of one frame (1, z, y, x)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3:
        raise InputError(f"an LGE study must be a 3D short-axis stack; got voxels of shape {list(values.shape)}")
    return np.transpose(values, (2, 1, 0)).astype(np.float32)


def read_on_grid(path: str, image_path: str, what: str = "label") -> sitk.Image:
    """Read a file that must lie on exactly ``image_path``'s grid (a label, an RV mask).

    Raises:
        InputError: unreadable, or its grid (size, spacing, origin, direction) is not the image's.
    """
    image_geometry = read_geometry(image_path)
    volume = read_itk(path)
    geometry = Geometry.of(volume)
    if not geometry.matches(image_geometry):
        raise InputError(
            f"{what} grid differs from its image: {what} {geometry.describe()}, image {image_geometry.describe()}"
        )
    return volume


def check_label(label_path: str, image_path: str) -> np.ndarray:
    """Check an uploaded label against its study; return its values as (x, y, z) uint8.

    Raises:
        InputError: unreadable or empty file, a grid that differs from the image's, values outside the
            EMIDEC classes 0-4, or non-integer values.
    """
    values = sitk.GetArrayFromImage(read_on_grid(label_path, image_path))
    if not np.all(np.isfinite(values)) or not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError("label values must be whole numbers (EMIDEC classes 0-4)")
    found = np.unique(values)
    outside = [int(v) for v in found if v < 0 or v >= NUM_CLASSES]
    if outside:
        raise InputError(f"label values must be 0-4 (background, lv_cavity, myocardium, scar, mvo); found {outside}")
    return np.transpose(values.astype(np.uint8), (2, 1, 0))


def write_label_like(label_xyz: np.ndarray, image_path: str, out_path: str, *, compress: bool = True) -> str:
    """Write a (x, y, z) label on exactly the grid of ``image_path``.

    ``compress`` False writes NRRD (and other ITK formats) raw: OHIF's NRRD reader asks for that
    (``result_compress=false``) and misreads a gzip body. A ``.nii.gz`` name is always gzip.

    A NIfTI study gets its own header back (only the data type changes), so every viewer overlays
    label and image identically, whatever it makes of the header; anything else (DICOM series, NRRD)
    gets ITK's geometry copied from the image.
    """
    label_xyz = np.asarray(label_xyz, np.uint8)
    if _is_nifti(image_path) and _is_nifti(out_path):
        source = nib.load(image_path)
        if source.shape[:3] != label_xyz.shape:
            raise ValueError(f"label shape {label_xyz.shape} differs from image {source.shape[:3]}")
        header = source.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1, 0)
        image = nib.Nifti1Image(label_xyz.reshape(source.shape[:3]), source.affine, header=header)
        nib.save(image, out_path)
        return out_path
    reference = read_itk(image_path)
    if tuple(reference.GetSize())[:3] != label_xyz.shape:
        raise ValueError(f"label shape {label_xyz.shape} differs from image {reference.GetSize()}")
    label = sitk.GetImageFromArray(np.transpose(label_xyz, (2, 1, 0)))
    label.CopyInformation(reference)
    sitk.WriteImage(label, out_path, useCompression=compress)
    return out_path


@dataclass(frozen=True)
class HeaderFacts:
    """What a study's header records, beyond the grid ITK makes of it.

    ITK gives every image a spacing and a direction: 1 mm and the identity when the header has none. A
    scar report must know when those are ITK's defaults, not the scanner's.
    """

    spacing_recorded: bool
    orientation_recorded: bool
    orientation_note: str = ""  # why an orientation the header has is not taken as recorded


def _placeholder_sform(header) -> bool:
    """An sform that is only a stand-in: axis-aligned unit scales at the origin while pixdim says otherwise."""
    sform = np.asarray(header.get_sform(), float)
    pixdim = np.asarray(header["pixdim"][1:4], float)
    unit_axes = np.allclose(np.abs(sform[:3, :3]), np.eye(3))
    return bool(unit_axes and np.allclose(sform[:3, 3], 0) and not np.allclose(pixdim, 1))


def _nrrd_fields(path: str) -> set[str]:
    """Field names of a NRRD header (text up to the first blank line); detached headers included."""
    names = set()
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if not line:
                break
            if ":" in line and not line.startswith("#"):
                names.add(line.split(":", 1)[0].strip().lower())
    return names


def header_facts(path: str) -> HeaderFacts:
    """Whether a study's header records its voxel spacing and its patient orientation.

    - NIfTI: spacing from ``pixdim`` (recorded when positive and finite, and not the all-1 default of a
      header with no units); orientation when ``qform_code`` or ``sform_code`` is set. The EMIDEC header
      trap (unit-scale sform, real spacing in pixdim) counts as both recorded: ITK reads pixdim.
    - NRRD: ``space directions`` or ``spacings``; orientation from ``space directions``.
    - DICOM series or file: Pixel Spacing (or Imager Pixel Spacing); Image Orientation (Patient).
    - Other formats ITK reads (MetaImage): both recorded, as their headers always carry them.

    Raises:
        InputError: the file or folder cannot be read.
    """
    if os.path.isdir(path) or (os.path.isfile(path) and not path.endswith((*NIFTI_SUFFIXES, ".nrrd", ".nhdr"))):
        header = first_dicom_header(path)
        if header is not None:
            return HeaderFacts(
                spacing_recorded="PixelSpacing" in header or "ImagerPixelSpacing" in header,
                orientation_recorded="ImageOrientationPatient" in header,
            )
        if os.path.isdir(path):
            raise InputError(f"no DICOM image found in folder {os.path.basename(path)}")
        return HeaderFacts(spacing_recorded=True, orientation_recorded=True)
    if _is_nifti(path):
        try:
            header = nib.load(path).header
        except Exception as e:  # nibabel raises several types for a damaged header
            raise InputError(f"cannot read {os.path.basename(path)} as NIfTI: {e}") from e
        pixdim = np.asarray(header["pixdim"][1:4], float)
        no_units = int(header["xyzt_units"]) == 0
        spacing = bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0) and not (no_units and np.all(pixdim == 1)))
        orientation = int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0
        if orientation and int(header["qform_code"]) == 0 and _placeholder_sform(header):
            return HeaderFacts(
                spacing_recorded=spacing,
                orientation_recorded=False,
                orientation_note="the NIfTI header's only orientation is a placeholder sform (unit scales unlike "
                "pixdim, axis-aligned, origin 0: the EMIDEC header trap), not the patient's",
            )
        return HeaderFacts(spacing_recorded=spacing, orientation_recorded=orientation)
    fields = _nrrd_fields(path)
    return HeaderFacts(
        spacing_recorded="space directions" in fields or "spacings" in fields,
        orientation_recorded="space directions" in fields,
    )


def first_dicom_header(path: str) -> pydicom.Dataset | None:
    """Header (no pixels) of the first DICOM image in a folder, or of a DICOM file; None if there is none."""
    if os.path.isdir(path):
        candidates = [os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith(".")]
    elif os.path.isfile(path):
        candidates = [path]
    else:
        return None
    for candidate in candidates:
        if not os.path.isfile(candidate):
            continue
        try:
            ds = pydicom.dcmread(candidate, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue  # NIfTI, NRRD, notes or other non-DICOM files beside the series
        # A DICOMDIR or presentation state is DICOM too but has no image and no sequence.
        if "Rows" in ds:
            return ds
    if os.path.isdir(path):
        logger.warning("no readable DICOM image in %s", os.path.basename(path))
    return None
