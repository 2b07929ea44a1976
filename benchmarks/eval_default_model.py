"""Re-measure the shipped checkpoint on data it was not trained on, on this machine; or summarise a
cross-validation.

    .venv/bin/python benchmarks/eval_default_model.py --real ../shared/real [--json out.json]
    .venv/bin/python benchmarks/eval_default_model.py --cv /tmp/cv   # fold*.json of train_default_model --fold
    .venv/bin/python benchmarks/eval_default_model.py --cv /tmp/cv --real ../shared/real \
        --calibration apps/scar_lge/model/calibration.json --json /tmp/cv/report.json

With ``--cv DIR --real R``: every EMIDEC exam is predicted by the fold model that never saw it, the
CV table is printed (per structure, per fold and per case, single pass and flip-averaged), and the
calibrated rules of ``lib/calibration.py`` (speck area, scar presence, intervals) are fitted
leave-one-fold-out and judged: scar-presence sensitivity and specificity, interval coverage.
``--calibration`` writes the rules fitted on every out-of-fold prediction (what the product ships).

Without ``--cv``: held-out EMIDEC cases (the fixed 20 % split of lib/datasets.py, never trained on) and 12 phantoms
from seeds the training never used (30-41). Prints case-level Dice (mean, SD), scar-free cases with
false scar, the predicted / true scar volume on phantoms, and the device.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "scar_lge"))

from lib.calibration import (  # noqa: E402
    INTERVAL_LEVEL,
    SCAR_GROWTH_FRACTIONS,
    SPECK_AREAS_MM2,
    Calibration,
    conformal_quantile,
    conformity_score,
    fit_presence,
    label_passes,
    load_shipped,
    remove_scar_specks,
    scar_contrast_sd,
    scar_percent_lv,
)
from lib.constants import LV_WALL, MYOCARDIUM_DENSITY_G_PER_ML, TOTAL_SCAR  # noqa: E402
from lib.datasets import (  # noqa: E402
    EMIDEC_PNG_NOMINAL_SPACING_MM,
    emidec_png_cases,
    emidec_png_study,
    kfold_cases,
    load_emidec_png_case,
    phantom_studies,
    read_emidec_png_case,
    split_cases,
)
from lib.engine import judge, label_from_probs, predict_label, validate  # noqa: E402
from lib.metrics import dice, summarise_cases  # noqa: E402
from lib.model import build_network, checkpoint_recipe, default_device, enable_mc_dropout, load_checkpoint  # noqa: E402

PHANTOM_SEEDS = range(30, 42)
FALSE_SCAR_G = 1.0  # the clinically visible amount: a normal heart given more than 1 g of scar


def _mean_sd(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4), "n": len(values)}


def cv_summary(folds: list[list[dict]]) -> dict:
    """Cross-validation figures from each fold's held-out per-case results (``lib.engine.validate``).

    Per structure: the mean and SD over folds of each fold's case-mean Dice (scar over infarct cases, MVO
    over MVO cases). Over all held-out cases together: normal cases given more than 1 g of scar, and the
    bias and SD of predicted minus expert scar % of LV mass on infarct cases (masses on the model grid,
    1.05 g/mL; EMIDEC PNG spacing is nominal, a ratio is not affected).
    """
    out: dict = {"folds": len(folds), "cases": sum(len(f) for f in folds)}
    per_fold = [summarise_cases(f) for f in folds]
    for name in ("lv_cavity", "lv_wall", "scar", "mvo"):
        values = [s[name]["mean"] for s in per_fold if s[name]["mean"] is not None]
        out[name] = {**_mean_sd(values), "per_fold": values}
    cases = [c for f in folds for c in f]
    normals = [c for c in cases if not c["truth_has_scar"]]
    out["normal_cases_over_1g_false_scar"] = {
        "count": sum(1 for c in normals if c["predicted_scar_ml"] * MYOCARDIUM_DENSITY_G_PER_ML > FALSE_SCAR_G),
        "of": len(normals),
    }
    differences = []
    for c in cases:
        if c["truth_has_scar"]:
            scar, wall = c["overlap"]["scar"], c["overlap"]["lv_wall"]
            predicted = 100 * scar["predicted"] / wall["predicted"] if wall["predicted"] else 0.0
            differences.append(predicted - 100 * scar["reference"] / wall["reference"])
    out["scar_percent_lv_infarct_cases"] = {
        "bias": round(float(np.mean(differences)), 2) if differences else None,
        "sd_of_difference": round(float(np.std(differences, ddof=1)), 2) if len(differences) > 1 else None,
        "n": len(differences),
    }
    return out


SPREADS = ("flip_passes", "mc_dropout", "none")  # where an interval's per-study spread comes from
MC_SPREAD_SAMPLES = 8  # dropout samples of the Monte-Carlo spread compared with the flip spread (not scoring's)


def _percent(label: np.ndarray) -> float:
    return scar_percent_lv(label) or 0.0


def out_of_fold_predictions(folder: Path, real: str, n_folds: int, parser) -> list[dict]:
    """Each EMIDEC case predicted by the fold model that never saw it; cached in ``folder/oof.npz``.

    Per case: the image, the expert label, the flip-averaged and the single-pass prediction (as inference
    labels them, before the calibrated rules), and each flip pass and :data:`MC_SPREAD_SAMPLES` Monte-Carlo
    dropout samples labelled for the spread (:func:`lib.calibration.label_passes`).
    """
    root = Path(real) / "emidec_png"
    cases = emidec_png_cases(root)
    splits = kfold_cases(list(cases), n_folds)
    checkpoints = sorted(folder.glob("fold*.pt"))
    if len(checkpoints) != n_folds:
        parser.error(f"calibration needs all {n_folds} fold models in {folder}, found {len(checkpoints)}")
    for checkpoint in checkpoints:  # the no-leak claim rests on each model having held out exactly its fold
        k = int(checkpoint.stem.removeprefix("fold"))
        metrics = checkpoint.with_suffix(".json")
        held_out = json.loads(metrics.read_text()).get("held_out_cases") if metrics.exists() else None
        if held_out is None or sorted(held_out) != sorted(splits[k]):
            parser.error(f"{metrics} does not record fold {k} of {n_folds} as its held-out cases")
    # Which models made the cache: retrained folds must not be judged by their predecessors' predictions.
    fingerprint = json.dumps([[c.name, c.stat().st_size, c.stat().st_mtime_ns] for c in checkpoints])
    cache = folder / "oof.npz"
    if cache.exists():
        stored = np.load(cache, allow_pickle=True)
        if "fingerprint" in stored and str(stored["fingerprint"]) == fingerprint:
            return list(stored["cases"])
    device = default_device()
    out = []
    for checkpoint in checkpoints:
        k = int(checkpoint.stem.removeprefix("fold"))
        network = build_network()
        load_checkpoint(network, str(checkpoint))
        network.to(device).eval()
        for case in splits[k]:
            study = load_emidec_png_case(root, case, cases[case])
            image = study.image[None].to(device)
            with torch.no_grad():
                passes = network(image, keep_passes=True)[:, 0].float().cpu()  # (P, K, H, W, D)
                enable_mc_dropout(network)
                samples = torch.stack(
                    [network(image, flip_tta=False)[0].float().cpu() for _ in range(MC_SPREAD_SAMPLES)]
                )
                network.eval()
            out.append(
                {
                    "name": case,
                    "fold": k,
                    "voxel_ml": study.voxel_ml,
                    "truth": study.label[0].numpy().astype(np.uint8),
                    # Kept for rules that need intensities (MVO cores), judged on the same predictions.
                    "image": study.image[0].numpy().astype(np.float16),  # model grid, normalised
                    "pred": label_from_probs(passes.mean(dim=0))[0].numpy().astype(np.uint8),
                    "single_pass": label_from_probs(passes[0])[0].numpy().astype(np.uint8),
                    # Spreads are labelled as inference labels them (lib/calibration.label_passes).
                    "flip_passes": label_passes(passes),
                    "mc_dropout": label_passes(samples),
                }
            )
    np.savez_compressed(cache, cases=np.array(out, dtype=object), fingerprint=fingerprint)
    return out


# EMIDEC PNGs carry no spacing: areas and masses here are at the nominal 1.5 mm (lib/datasets.py), so
# the calibrated speck area is in nominal mm^2 (the exams' true in-plane spacing is 1.25-2 mm).
SPACING = EMIDEC_PNG_NOMINAL_SPACING_MM


def _fit(cases: list[dict], spread: str, level: float) -> tuple[Calibration, dict]:
    """Choose the speck area, fit scar presence and the interval quantiles on ``cases``.

    The speck area and the growth's SD multiple maximise the mean scar Dice over all cases after the rules,
    a normal case scoring 1 when it reads "no scar" and 0 otherwise (ties: the first pair examined, i.e.
    the smaller area, then the earlier of :data:`SCAR_GROWTH_FRACTIONS`: no growth, 0.5, 0.65, 0.8).

    Returns the calibration and, for comparison, the pooled quantiles (one for both groups) and which
    group quantiles fell back to them for want of scores.
    """
    best = None
    for area in SPECK_AREAS_MM2:
        cleaned = [remove_scar_specks(c["pred"], SPACING, area) for c in cases]
        intercept, slope, contrast_slope, contrast_range = fit_presence(
            [scar_percent_lv(x) for x in cleaned],
            [scar_contrast_sd(c["intensities"], x) for c, x in zip(cases, cleaned, strict=True)],
            [_has_scar(c) for c in cases],
        )
        for growth in SCAR_GROWTH_FRACTIONS:  # rule 3 acts after the decision, so the presence fit holds for each
            trial = Calibration(
                area,
                intercept,
                slope,
                level,
                0.0,
                0.0,
                presence_contrast_slope=contrast_slope,
                presence_contrast_range=contrast_range,
                scar_growth_fraction=growth,
            )
            finals = [trial.finalise(c["pred"], SPACING, c["intensities"]).label for c in cases]
            score = float(np.mean([_scar_score(f, c["truth"]) for f, c in zip(finals, cases, strict=True)]))
            if best is None or score > best[0] + 1e-9:
                best = (score, trial)
    calibration = best[1]
    scores: dict[bool, dict[str, list[float]]] = {group: {"percent": [], "mass": []} for group in (True, False)}
    for c in cases:
        inputs = _interval_inputs(calibration, c, spread)
        if inputs is None:
            continue
        predicted, spread_pp, truth_pct, truth_mass_pct, present = inputs
        floor = calibration.spread_floor_pp
        scores[present]["percent"].append(conformity_score(truth_pct, predicted, spread_pp, floor))
        scores[present]["mass"].append(conformity_score(truth_mass_pct, predicted, spread_pp, floor))
    # Mondrian: one quantile per group (read as scar or not); a group too small for one takes the pooled one.
    quantiles, extras = {}, {"pooled": {}, "fell_back_to_pooled": []}
    for kind in ("percent", "mass"):
        pooled = conformal_quantile(scores[True][kind] + scores[False][kind], level)
        extras["pooled"][kind] = pooled
        for group in (True, False):
            q = conformal_quantile(scores[group][kind], level)
            if not math.isfinite(q):
                extras["fell_back_to_pooled"].append(f"{'scar' if group else 'no scar'} {kind}")
            quantiles[group, kind] = q if math.isfinite(q) else pooled
    calibration.interval_q_percent, calibration.interval_q_mass = quantiles[True, "percent"], quantiles[True, "mass"]
    calibration.interval_q_percent_no_scar = quantiles[False, "percent"]
    calibration.interval_q_mass_no_scar = quantiles[False, "mass"]
    return calibration, extras


def _has_scar(case: dict) -> bool:
    return bool(np.isin(case["truth"], TOTAL_SCAR).any())


def _scar_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Scar Dice; both empty counts 1 (a normal heart read as normal), one empty 0."""
    return dice(np.isin(pred, TOTAL_SCAR), np.isin(truth, TOTAL_SCAR))


def _interval_inputs(
    calibration: Calibration, case: dict, spread: str
) -> tuple[float, float, float, float, bool] | None:
    """Predicted scar % LV, its spread, the expert's scar % LV, expert scar mass as % of predicted LV mass,
    and whether the study reads as scar (the interval's group).

    None when no LV wall was predicted: inference withholds every percentage then (``no_myocardium``).
    """
    reading = calibration.finalise(case["pred"], SPACING, case["intensities"])
    final = reading.label
    predicted_wall = int(np.isin(final, LV_WALL).sum())
    if predicted_wall == 0:
        return None
    predicted = _percent(final)
    spread_pp = 0.0 if spread == "none" else calibration.spread_pp(case[spread], SPACING, reading.contrast_sd)
    truth = case["truth"]
    truth_mass_pct = 100.0 * int(np.isin(truth, TOTAL_SCAR).sum()) / predicted_wall
    return predicted, spread_pp, _percent(truth), truth_mass_pct, reading.present


def calibrate(cases: list[dict], n_folds: int, spread: str = "flip_passes", level: float = INTERVAL_LEVEL) -> dict:
    """Leave-one-fold-out figures of the calibrated rules, and the calibration fitted on every case.

    For each fold, the rules are fitted on the other folds' out-of-fold predictions and judged on this
    one, so every figure below is measured on cases that neither the network nor the rules saw.
    """
    judged, rows, chosen_areas, chosen_growth, fallbacks = [], [], [], [], []
    for k in range(n_folds):
        fit, extras = _fit([c for c in cases if c["fold"] != k], spread, level)
        fallbacks.append(extras["fell_back_to_pooled"])
        # The same rules with one pooled quantile for both groups: what the Mondrian split changes.
        pooled_fit = replace(
            fit,
            interval_q_percent=extras["pooled"]["percent"],
            interval_q_mass=extras["pooled"]["mass"],
            interval_q_percent_no_scar=None,
            interval_q_mass_no_scar=None,
        )
        chosen_areas.append(fit.min_scar_area_mm2)
        chosen_growth.append(fit.scar_growth_fraction)
        fold = []
        for c in (c for c in cases if c["fold"] == k):
            reading = fit.finalise(c["pred"], SPACING, c["intensities"])
            fold.append(judge(c["name"], reading.label, c["truth"], c["voxel_ml"]))
            inputs = _interval_inputs(fit, c, spread)
            row = {
                "name": c["name"],
                "fold": k,
                "infarct": _has_scar(c),
                "lv_wall_dice": round(fold[-1]["lv_wall"], 3),
                "scar_dice": round(fold[-1]["scar"], 3),
                "scar_present": reading.present,
                "scar_present_probability": round(reading.probability, 3),
                "scar_contrast_sd": round(reading.contrast_sd, 2),
                "expert_scar_percent_lv": round(_percent(c["truth"]), 2),
                "predicted_scar_percent_lv": None,
                "interval": None,
                "percent_covered": None,
                "percent_covered_pooled_quantile": None,
                "mass_covered": None,
            }
            if inputs is not None:
                predicted, spread_pp, truth_pct, truth_mass_pct, present = inputs
                low, high = fit.percent_interval(predicted, spread_pp, present=present)
                # in % of predicted LV mass
                mass_low, mass_high = fit.mass_interval(predicted, spread_pp, 100.0, present=present)
                pooled_low, pooled_high = pooled_fit.percent_interval(predicted, spread_pp, present=present)
                row.update(
                    predicted_scar_percent_lv=round(predicted, 2),
                    interval=[low, high],
                    percent_covered=low <= truth_pct <= high,
                    percent_covered_pooled_quantile=pooled_low <= truth_pct <= pooled_high,
                    mass_covered=mass_low <= truth_mass_pct <= mass_high,
                )
            rows.append(row)
        judged.append(fold)
    positives = [r for r in rows if r["infarct"]]
    negatives = [r for r in rows if not r["infarct"]]
    with_interval = [r for r in rows if r["interval"] is not None]
    infarct_with_interval = [r for r in with_interval if r["infarct"]]

    def share(key: str, subset: list[dict]) -> float:
        return round(float(np.mean([r[key] for r in subset])), 3)

    def median_width(subset: list[dict]) -> float:
        return round(float(np.median([r["interval"][1] - r["interval"][0] for r in subset])), 2)

    figures = {
        **cv_summary(judged),
        "speck_area_mm2_chosen_per_fold": chosen_areas,
        "scar_growth_fraction_chosen_per_fold": chosen_growth,
        "scar_presence": {
            "sensitivity": share("scar_present", positives),
            "specificity": round(1.0 - share("scar_present", negatives), 3),
            "accuracy": round(float(np.mean([r["scar_present"] == r["infarct"] for r in rows])), 3),
            "infarct_cases": len(positives),
            "normal_cases": len(negatives),
        },
        "intervals": {
            "level": level,
            "spread": spread,
            "scar_percent_lv_coverage": share("percent_covered", with_interval),
            "scar_percent_lv_coverage_infarct_cases": share("percent_covered", infarct_with_interval),
            "scar_mass_coverage": share("mass_covered", with_interval),
            "scar_mass_coverage_infarct_cases": share("mass_covered", infarct_with_interval),
            "median_percent_width_pp": median_width(with_interval),
            "median_percent_width_pp_infarct_cases": median_width(infarct_with_interval),
            "cases": len(with_interval),
            "cases_without_predicted_wall": len(rows) - len(with_interval),
            # Mondrian: coverage within each group of the presence answer, and with one pooled quantile.
            "scar_percent_lv_coverage_by_group": {
                "read_as_scar": _count(with_interval, "percent_covered", lambda r: r["scar_present"]),
                "read_as_no_scar": _count(with_interval, "percent_covered", lambda r: not r["scar_present"]),
                "infarcts_read_as_no_scar": _count(
                    with_interval, "percent_covered", lambda r: r["infarct"] and not r["scar_present"]
                ),
            },
            "scar_percent_lv_coverage_pooled_quantile": {
                "all": share("percent_covered_pooled_quantile", with_interval),
                "infarct_cases": share("percent_covered_pooled_quantile", infarct_with_interval),
                "read_as_no_scar": _count(
                    with_interval, "percent_covered_pooled_quantile", lambda r: not r["scar_present"]
                ),
            },
            "group_quantiles_that_fell_back_to_pooled_per_fold": fallbacks,
        },
    }
    final, extras = _fit(cases, spread, level)
    figures["intervals"]["group_quantiles_that_fell_back_to_pooled_all_cases"] = extras["fell_back_to_pooled"]
    final.cross_validation = figures
    return {"figures": figures, "calibration": final, "per_case": rows}


def shipped_rules_on_held_out(network, root: Path, cases: dict, held_out: list[str], device: str) -> dict:
    """The shipped model with the shipped rules (``calibration.json``) on held-out exams, as inference answers.

    Each exam's flip-averaged label goes through :meth:`Calibration.finalise` with the exam's own pixels,
    and gets its interval from its flip passes. The network never saw these exams; the rules were fitted
    on fold models' out-of-fold predictions of all 65 exams, these included, so the rules' figures here
    are not wholly unseen: the leave-one-fold-out figures of ``--cv`` are the unbiased ones.
    """
    calibration, problem = load_shipped()
    if calibration is None:
        return {"not_measured": problem}
    judged, rows = [], []
    for name in held_out:
        intensities, expert = read_emidec_png_case(root, name, cases[name])  # read once: pixels for the rules
        study = emidec_png_study(name, intensities, expert)
        with torch.no_grad():
            passes = network(study.image[None].to(device), keep_passes=True)[:, 0].float().cpu()
        reading = calibration.finalise(label_from_probs(passes.mean(dim=0))[0].numpy(), SPACING, intensities)
        truth = study.label[0].numpy()
        judged.append(judge(name, reading.label, truth, study.voxel_ml))
        predicted = _percent(reading.label)
        spread_pp = calibration.spread_pp(label_passes(passes), SPACING, reading.contrast_sd)
        low, high = calibration.percent_interval(predicted, spread_pp, present=reading.present)
        rows.append(
            {
                "name": name,
                "infarct": judged[-1]["truth_has_scar"],
                "scar_present": reading.present,
                "probability": round(reading.probability, 3),
                "contrast_sd": round(reading.contrast_sd, 2),
                "expert_scar_percent_lv": round(_percent(truth), 2),
                "predicted_scar_percent_lv": round(predicted, 2),
                "interval": [low, high],
                "covered": low <= _percent(truth) <= high,
            }
        )
    infarcts = [r for r in rows if r["infarct"]]
    normals = [r for r in rows if not r["infarct"]]
    return {
        **summarise_cases(judged),
        "normal_cases_over_1g_false_scar": cv_summary([judged])["normal_cases_over_1g_false_scar"],
        "scar_presence": {
            "infarcts_read_as_scar": f"{sum(r['scar_present'] for r in infarcts)} of {len(infarcts)}",
            "normals_read_as_no_scar": f"{sum(not r['scar_present'] for r in normals)} of {len(normals)}",
        },
        "interval_coverage": f"{sum(r['covered'] for r in rows)} of {len(rows)}",
        "per_case": rows,
    }


def _count(rows: list[dict], key: str, member) -> str:
    """'covered of n' over the rows ``member`` picks."""
    picked = [r for r in rows if member(r)]
    return f"{sum(bool(r[key]) for r in picked)} of {len(picked)}"


def _per_case_table(rows: list[dict]) -> str:
    lines = ["case        fold  wall  scar   p(scar)  expert%  predicted%  interval         covered"]
    for r in rows:
        if r["interval"] is None:
            lines.append(f"{r['name']:<11} {r['fold']:>4}  no LV wall predicted: no percentage, no interval")
            continue
        low, high = r["interval"]
        lines.append(
            f"{r['name']:<11} {r['fold']:>4}  {r['lv_wall_dice']:.3f} {r['scar_dice']:.3f}  "
            f"{r['scar_present_probability']:>6.3f}  {r['expert_scar_percent_lv']:>7.2f}  "
            f"{r['predicted_scar_percent_lv']:>10.2f}  [{low:6.2f}, {high:6.2f}]  "
            f"{'yes' if r['percent_covered'] else 'NO'}"
        )
    return "\n".join(lines)


def cross_validation(folder: Path, real: str | None, n_folds: int, parser) -> dict:
    """The CV table of fold models (``--real``: re-judged, with and without flip averaging, and with the
    calibrated rules fitted leave-one-fold-out) or of their metrics files."""
    if real is None:
        files = sorted(folder.glob("fold*.json"))
        if not files:
            parser.error(f"no fold*.json in {folder}")
        folds = [json.loads(f.read_text())["held_out_per_case"] for f in files]
        return {"files": [f.name for f in files], **cv_summary(folds)}
    cases = out_of_fold_predictions(folder, real, n_folds, parser)
    # The scar-presence rule reads intensities on the input grid, as inference does: a PNG exam's own pixels
    # (its nominal 1.5 mm is the model grid, so the predictions lie on it too).
    root, by_case = Path(real) / "emidec_png", emidec_png_cases(Path(real) / "emidec_png")
    for c in cases:
        c["intensities"] = read_emidec_png_case(root, c["name"], by_case[c["name"]])[0]
    raw = [
        [judge(c["name"], c["pred"], c["truth"], c["voxel_ml"]) for c in cases if c["fold"] == k]
        for k in range(n_folds)
    ]
    single = [
        [judge(c["name"], c["single_pass"], c["truth"], c["voxel_ml"]) for c in cases if c["fold"] == k]
        for k in range(n_folds)
    ]
    device = default_device()
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})",
        "fold_models": sorted(p.name for p in folder.glob("fold*.pt")),
        "single_pass": cv_summary(single),
        "flip_tta": cv_summary(raw),
        "calibrated": {spread: calibrate(cases, n_folds, spread) for spread in SPREADS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--model", default=str(ROOT / "apps" / "scar_lge" / "model" / "scar.pt"))
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--cv",
        help="summarise a cross-validation instead: with --real, re-judge each fold<K>.pt in this folder on its "
        "held-out fold with and without flip averaging; without, summarise the fold<K>.json metrics",
    )
    parser.add_argument("--folds", type=int, default=5, help="the --folds the fold models were trained with")
    parser.add_argument(
        "--calibration",
        help="with --cv and --real: write the rules fitted on every out-of-fold prediction here "
        "(apps/scar_lge/model/calibration.json ships with the default model)",
    )
    args = parser.parse_args()
    if args.calibration and not (args.cv and args.real):
        parser.error("--calibration needs --cv and --real")
    if args.cv:
        report = cross_validation(Path(args.cv), args.real, args.folds, parser)
        if args.calibration:
            # Inference scales intervals by the flip-pass spread, so only that calibration is valid for it;
            # the others are printed for comparison.
            chosen = report["calibrated"]["flip_passes"]["calibration"]
            if not math.isfinite(chosen.interval_q_percent) or not math.isfinite(chosen.interval_q_mass):
                parser.error("too few out-of-fold cases for a finite 90 % conformal quantile")
            chosen.source = {
                "fold_models": report["fold_models"],
                "recipe": checkpoint_recipe(),
                "spread": "flip_passes",
                "command": "benchmarks/eval_default_model.py " + " ".join(sys.argv[1:]),
                "created": time.strftime("%Y-%m-%d"),
            }
            Path(args.calibration).write_text(chosen.to_json() + "\n")
        for figures in report.get("calibrated", {}).values():
            figures["calibration"] = asdict(figures["calibration"])
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        rows = {spread: figures.pop("per_case") for spread, figures in report.get("calibrated", {}).items()}
        print(json.dumps(report, indent=2))
        if rows:
            print("\nper case, leave-one-fold-out, intervals scaled by the flip-pass spread:")
            print(_per_case_table(rows["flip_passes"]))
        return
    device = default_device()

    if not args.real:
        parser.error("--real is required unless --cv is given")
    network = build_network()
    if not load_checkpoint(network, args.model):
        parser.error(f"no checkpoint at {args.model}")
    network.to(device).eval()

    root = Path(args.real) / "emidec_png"
    cases = emidec_png_cases(root)
    _, held_out = split_cases(list(cases))
    start = time.time()
    emidec = validate(network, [load_emidec_png_case(root, c, cases[c]) for c in held_out], device)
    phantoms = phantom_studies(PHANTOM_SEEDS)
    ratios = []
    for study in phantoms:
        truth = np.isin(study.label[0].numpy(), TOTAL_SCAR).sum()
        if truth:
            pred = np.isin(predict_label(network, study.image, device)[0].numpy(), TOTAL_SCAR).sum()
            ratios.append(float(pred / truth))
    report = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})",
        "model": args.model,
        "held_out_emidec": summarise_cases(emidec),
        "held_out_emidec_with_shipped_rules": shipped_rules_on_held_out(network, root, cases, held_out, device),
        "phantoms_unseen": summarise_cases(validate(network, phantoms, device)),
        "phantom_scar_volume_pred_over_true": {
            "median": round(statistics.median(ratios), 3),
            "mean": round(statistics.mean(ratios), 3),
            "n": len(ratios),
        },
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "held_out_per_case": emidec}, indent=2))


if __name__ == "__main__":
    main()
