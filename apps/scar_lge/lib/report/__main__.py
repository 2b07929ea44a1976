"""Command line: the clinical scar report of a study and a label (the model's answer or a corrected one).

    PYTHONPATH=apps/scar_lge .venv/bin/python -m lib.report report IMAGE LABEL [--rv RV_LABEL] [--out DIR]

IMAGE is a NIfTI, NRRD or DICOM series folder; LABEL an EMIDEC-valued label on its exact grid (0 background,
1 LV cavity, 2 myocardium, 3 scar, 4 MVO); RV_LABEL an optional right-ventricle mask on the same grid (any
non-zero voxel), which anchors the AHA segments on the anterior RV insertion. Prints the JSON report; with
``--out`` also writes ``report.json``, ``bullseye.png`` and ``report.pdf`` there. Exit status 2 with a
one-line reason on input that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import SimpleITK as sitk

from ..errors import InputError
from .figures import save_bullseye, save_pdf
from .from_files import read_study, report_of


def _study_name(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    for suffix in (".nii.gz", ".nii", ".nrrd", ".dicom"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.report", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="print the JSON report; --out also writes the bullseye and PDF")
    report.add_argument("image", help="LGE study: NIfTI, NRRD or a DICOM series folder")
    report.add_argument("label", help="label on the study's grid, EMIDEC values 0-4")
    report.add_argument("--rv", default=None, help="RV mask on the same grid (anatomical anchor of the segments)")
    report.add_argument("--out", default=None, help="folder for report.json, bullseye.png and report.pdf")
    args = parser.parse_args(argv)

    # ITK warns on stderr about headers it reads correctly anyway (the EMIDEC unit-scale sform); the report's
    # own warnings say what matters.
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        study = read_study(args.image, args.label, args.rv)
        result = report_of(study)
        if args.out:
            out = os.path.abspath(args.out)
            if os.path.exists(out) and not os.path.isdir(out):
                raise InputError(f"--out {args.out} exists and is not a folder")
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "report.json"), "w") as f:
                json.dump(result, f, indent=1)
            save_bullseye(result, os.path.join(out, "bullseye.png"))
            save_pdf(result, study.image, study.label, os.path.join(out, "report.pdf"), title=_study_name(args.image))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an --out folder that cannot be made or written
        print(f"error: cannot write the report to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
