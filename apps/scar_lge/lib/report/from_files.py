"""The report of a reader's label file on its study: read, check, assess, build."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..caveats import assess, inversion_recovery
from ..errors import InputError
from ..label_io import check_label, header_facts, read_geometry, read_on_grid, read_voxels
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


def report_from_files(image_path: str, label_path: str, rv_path: str | None = None) -> tuple[dict, np.ndarray]:
    """The clinical report of a reader's (drawn or corrected) label, and the label as (x, y, z).

    The label's MVO needs no model validation (it is the reader's); every other rule of
    :func:`lib.caveats.assess` applies (a cine image's bright myocardium is not scar, a header without
    spacing gives no mass).

    Raises:
        InputError: the image or label cannot be read, or the label is not on the image's grid or has
            values outside the EMIDEC classes.
    """
    geometry = read_geometry(image_path)
    facts = header_facts(image_path)
    label = check_label(label_path, image_path)
    image = read_voxels(image_path)
    rv = read_rv_mask(rv_path, image_path) if rv_path else None
    assessed = assess(
        scar_quantification(label, geometry.spacing),
        heart_found=True,
        inversion_recovery=inversion_recovery(image_path),
        mvo_validation="reader",
        mvo_source="reader's label",
        spacing_recorded=facts.spacing_recorded,
    )
    return build_report(label, geometry, facts, assessed, image=image, rv=rv), label
