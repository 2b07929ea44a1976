"""The report of a reader's label file on its study: read, check, assess, build."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..caveats import assess, inversion_recovery
from ..errors import InputError
from ..label_io import Geometry, HeaderFacts, check_label, header_facts, read_geometry, read_on_grid, read_voxels
from ..metrics import scar_quantification
from .build import build_report


def read_rv_mask(rv_path: str, image_path: str) -> np.ndarray:
    """An RV label file on the study's grid as an (x, y, z) boolean mask: every non-zero voxel is RV.

    Raises:
        InputError: unreadable, another grid, or no RV voxel at all.
    """
    rv = read_on_grid(rv_path, image_path, what="RV label")
    mask = np.transpose(sitk.GetArrayFromImage(rv), (2, 1, 0)) != 0
    if not mask.any():
        raise InputError("the RV label has no non-zero voxel")
    return mask


@dataclass(frozen=True)
class ReaderStudy:
    """A study and a reader's label read once: all a report, its bullseye and its PDF need."""

    image_path: str
    geometry: Geometry
    facts: HeaderFacts
    label: np.ndarray  # (x, y, z) EMIDEC classes
    image: np.ndarray  # (x, y, z) signal
    rv: np.ndarray | None


def read_study(image_path: str, label_path: str, rv_path: str | None = None) -> ReaderStudy:
    """Read and check a study, its label and an optional RV mask.

    Raises:
        InputError: the image or label cannot be read, or the label is not on the image's grid or has
            values outside the EMIDEC classes.
    """
    return ReaderStudy(
        image_path=image_path,
        geometry=read_geometry(image_path),
        facts=header_facts(image_path),
        label=check_label(label_path, image_path),
        image=read_voxels(image_path),
        rv=read_rv_mask(rv_path, image_path) if rv_path else None,
    )


def report_of(study: ReaderStudy) -> dict:
    """The clinical report of a reader's (drawn or corrected) label.

    The label's MVO needs no model validation (it is the reader's); every other rule of
    :func:`lib.caveats.assess` applies (a cine image's bright myocardium is not scar, a header without
    spacing gives no mass).
    """
    assessed = assess(
        scar_quantification(study.label, study.geometry.spacing),
        heart_found=True,
        inversion_recovery=inversion_recovery(study.image_path),
        mvo_validation="reader",
        mvo_source="reader's label",
        spacing_recorded=study.facts.spacing_recorded,
    )
    return build_report(study.label, study.geometry, study.facts, assessed, image=study.image, rv=study.rv)


def report_from_files(image_path: str, label_path: str, rv_path: str | None = None) -> tuple[dict, np.ndarray]:
    """:func:`report_of` the files, and the label as (x, y, z).

    Raises:
        InputError: as :func:`read_study`.
    """
    study = read_study(image_path, label_path, rv_path)
    return report_of(study), study.label
