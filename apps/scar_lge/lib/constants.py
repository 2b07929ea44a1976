"""Keys and label values shared by every part of the app."""

from __future__ import annotations

import numpy as np

IMAGE = "image"
LABEL = "label"
PRED = "pred"
# A semi-automatic rule's per-voxel scar probability, carried beside the label for soft-target losses.
SCAR_PROBABILITY = "scar_probability"
# A training sample's whole slice for the heart localiser, and its heart mask, beside the segmenter's crop.
LOCALISER_IMAGE, LOCALISER_HEART = "loc_image", "loc_heart"

# EMIDEC scheme, so EMIDEC data trains without remapping. MVO (no-reflow) is the dark core of an
# infarct: it is part of the infarct in every "total scar" figure.
LABELS: dict[str, int] = {"background": 0, "lv_cavity": 1, "myocardium": 2, "scar": 3, "mvo": 4}
BACKGROUND, LV_CAVITY, MYOCARDIUM, SCAR, MVO = (LABELS[k] for k in LABELS)
NUM_CLASSES = len(LABELS)
# The structures a viewer shows, name -> label value: background is no segment. A mapping, not a list:
# MONAI Label's OHIF panel and Slicer plugin number a list from 1, which put every name one value off.
FOREGROUND_LABELS: dict[str, int] = {k: v for k, v in LABELS.items() if v != BACKGROUND}
LV_WALL = (MYOCARDIUM, SCAR, MVO)
TOTAL_SCAR = (SCAR, MVO)
HEART = (LV_CAVITY, MYOCARDIUM, SCAR, MVO)

# Myocardial tissue density used for LGE scar mass (g/mL).
MYOCARDIUM_DENSITY_G_PER_ML = 1.05

MODEL_NAME = "scar"
APP_VERSION = "0.2.0"  # the app's version: /info/ and the Software Versions of the SEGs it writes

# RAS (NIfTI, MONAI) and LPS (DICOM, ITK) differ by the sign of x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
