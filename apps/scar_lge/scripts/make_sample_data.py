"""Generate the sample studies in ``sample-data/`` from a seed (reproducible byte for byte).

    python apps/scar_lge/scripts/make_sample_data.py --out sample-data

Writes NIfTI LGE phantoms ``lge_NNN.nii.gz`` (the first ``--labeled`` with a ``final`` label under
``labels/final/``), and one DICOM series folder ``lge_dicom_NNN.dicom/`` without a label.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.dicom_io import write_dicom_series  # noqa: E402
from lib.phantoms import make_phantom  # noqa: E402


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="sample-data")
    parser.add_argument("--studies", type=int, default=14)
    parser.add_argument("--labeled", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="first phantom seed; study i uses seed + i")
    args = parser.parse_args()

    out = Path(args.out)
    for stale in list(out.glob("lge_*")) + [out / "labels", out / "datastore_v2.json"]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    (out / "labels" / "final").mkdir(parents=True, exist_ok=True)
    manifest = []
    for i in range(args.studies):
        seed = args.seed + i
        # A scar-free study among the labelled ones and one among the unlabelled: both must work.
        scar = False if i in (3, args.labeled + 1) else True if i in (0, 1, args.labeled) else None
        # One tight crop at 10 slices of 256 x 256 cols, like a typical clinical LGE export.
        shape, n_slices = ((256, 256), 10) if i == 2 else (None, None)
        p = make_phantom(seed, scar=scar, shape=shape, n_slices=n_slices, spacing_mm=1.4 if i == 2 else None)
        name = f"lge_{i:03d}"
        save_nifti(p.image, p.affine, out / f"{name}.nii.gz")
        if i < args.labeled:
            save_nifti(p.label, p.affine, out / "labels" / "final" / f"{name}.nii.gz")
        manifest.append({"id": name, "final_label": i < args.labeled, **p.info})
    seed = args.seed + args.studies
    p = make_phantom(seed, scar=True)
    name = f"lge_dicom_{args.studies:03d}"
    write_dicom_series(p.image, p.affine, str(out / f"{name}.dicom"), patient_id=f"SCARLGE{seed:04d}")
    manifest.append({"id": name, "final_label": False, "format": "DICOM series", **p.info})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {len(manifest)} studies to {out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
