"""Does training through semi-automatic scar labels with a noise-robust loss beat plain Dice + CE?

On the EMIDEC exams of ``--real`` (a fixed, stratified, case-level split: the 13 exams the default
model never saw are the test set), semi-automatic labels are made with each rule of ``lib.semiauto``
from the expert myocardium of the training exams, and the product's network is fine-tuned on them
from one common checkpoint (the shipped model) with each loss of ``lib.losses``, several seeds each,
same steps. Every arm is judged against the expert labels of the test exams; so are the test exams'
own semi-automatic labels (the lower reference) and the same network fine-tuned on expert labels
(the upper bound).

    .venv/bin/python benchmarks/noisy_labels.py --real ../shared/real --out /tmp/noisy-labels

Runs are appended to ``<out>/runs.jsonl`` as they finish and skipped when found there, so a stopped
benchmark resumes where it was. ``--quick`` is a small smoke run (a few exams, one seed, few steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "scar_lge"))

from lib.constants import LV_WALL, MVO, SCAR, TOTAL_SCAR  # noqa: E402
from lib.datasets import (  # noqa: E402
    EMIDEC_PNG_NOMINAL_SPACING_MM,
    emidec_png_cases,
    emidec_png_study,
    read_emidec_png_case,
    split_cases,
)
from lib.engine import Study, predict_label, train  # noqa: E402
from lib.losses import LOSSES, build_loss  # noqa: E402
from lib.metrics import dice, scar_quantification  # noqa: E402
from lib.model import build_network, load_checkpoint  # noqa: E402
from lib.semiauto import SemiAutoError, ewa_scar, fwhm_scar, nsd_scar  # noqa: E402

logger = logging.getLogger("noisy_labels")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "apps" / "scar_lge" / "model" / "scar.pt"
# Rules that make training labels; "3sd" is the one the paper's measurement and most clinics use.
RULES = {
    "3sd": lambda image, label: nsd_scar(image, label, n_sd=3.0, spacing_mm=EMIDEC_PNG_NOMINAL_SPACING_MM),
    "5sd": lambda image, label: nsd_scar(image, label, n_sd=5.0, spacing_mm=EMIDEC_PNG_NOMINAL_SPACING_MM),
    "fwhm": lambda image, label: fwhm_scar(image, label, spacing_mm=EMIDEC_PNG_NOMINAL_SPACING_MM),
    "ewa": lambda image, label: ewa_scar(image, label, spacing_mm=EMIDEC_PNG_NOMINAL_SPACING_MM),
}
FALSE_SCAR_G = 1.0


def _git_commit() -> str:
    """The code's commit, recorded with each run (a run resumed later may come from other code)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _make(rule: str, image: np.ndarray, expert: np.ndarray, case: str, refused: dict):
    """The rule's label of one exam, or None (recorded in ``refused``) when the rule refuses the exam."""
    try:
        return RULES[rule](image, expert)
    except SemiAutoError as e:
        refused.setdefault(rule, {})[case] = str(e)
        return None


def read_case(root: Path, slices: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, D) image and expert label of one EMIDEC PNG exam."""
    return read_emidec_png_case(root, slices[0].stem, slices)


def as_study(name: str, image: np.ndarray, label: np.ndarray, scar_probability: np.ndarray | None) -> Study:
    study = emidec_png_study(name, image, label)
    if scar_probability is not None:
        # Same grid as the label (the nominal spacing is the model's, so preprocessing does not resample).
        soft = torch.as_tensor(scar_probability, dtype=torch.float32)[None]
        if soft.shape != study.label.shape:
            raise RuntimeError(f"{name}: soft target {tuple(soft.shape)} is not on the label grid {study.label.shape}")
        study.scar_probability = soft
    return study


def figures(label: np.ndarray) -> dict:
    """Scar and LV masses (nominal g) and scar % of LV mass of one label (``lib.metrics.scar_quantification``)."""
    q = scar_quantification(label, EMIDEC_PNG_NOMINAL_SPACING_MM)
    # No wall, no share of it: NaN keeps a failed exam out of the means instead of breaking them.
    pct = q["scar_percent_lv_mass"]
    return {
        "lv_g": q["lv_myocardial_mass_g"],
        "scar_g": q["scar_mass_g"],
        "scar_pct": float("nan") if pct is None else pct,
    }


def judge(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per-exam scores of one label against the expert's."""
    p, t = figures(pred), figures(truth)
    return {
        "wall": dice(np.isin(pred, LV_WALL), np.isin(truth, LV_WALL)),
        "scar": dice(np.isin(pred, TOTAL_SCAR), np.isin(truth, TOTAL_SCAR)),
        "mvo": dice(pred == MVO, truth == MVO),
        "has_scar": bool(np.isin(truth, TOTAL_SCAR).any()),
        "has_mvo": bool((truth == MVO).any()),
        "scar_g": p["scar_g"],
        "expert_scar_g": t["scar_g"],
        "scar_pct": p["scar_pct"],
        "expert_scar_pct": t["scar_pct"],
    }


def run_arm(arm: dict, studies: list[Study], test: list[tuple[str, Study, np.ndarray]], args) -> dict:
    network = build_network()
    load_checkpoint(network, str(args.base))
    start = time.time()
    history = []
    if arm["loss"] is not None:
        history = train(
            network,
            studies,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=arm["seed"],
            loss=build_loss(arm["loss"]),
            device=args.device,
            num_workers=args.workers,
        )
    seconds = time.time() - start
    per_case, predictions = {}, {}
    for name, study, truth in test:
        pred = predict_label(network, study.image, args.device)[0].numpy()
        per_case[name] = judge(pred, truth)
        predictions[name] = pred.astype(np.uint8)
    if arm["seed"] == 0:  # kept for the overlay figure
        np.savez_compressed(
            args.predictions / f"{arm['arm'].replace(' / ', '__').replace(' ', '_')}.npz", **predictions
        )
    return {
        **arm,
        "train_seconds": round(seconds, 1),
        "steps": len(history) * (sum(s.image.shape[-1] for s in studies) // args.batch_size),
        "last_loss": history[-1]["segmenter"] if history else None,
        "per_case": per_case,
    }


def _sd(values) -> float:
    """Sample SD (ddof 1), NaN-aware; 0 for a single value."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def summarise(runs: list[dict], references: dict[str, dict]) -> dict:
    """Each arm's and reference's agreement with the expert on the test exams.

    Dice per structure: per seed, the mean over exams (infarct Dice over infarct exams, MVO over MVO
    exams, wall over all), then mean and sample SD over seeds, kept by seed number. Scar figures: each
    exam's value averaged over seeds, minus the expert's; bias, sample SD and 95 % limits of agreement
    (bias +- 1.96 SD) of scar % of LV mass over infarct exams; Wilcoxon signed-rank of seed-mean against
    expert scar mass over all test exams; normal exams whose seed-mean scar mass exceeds 1 g.
    """
    arms: dict[str, list[dict]] = {}
    for run in runs:
        arms.setdefault(run["arm"], []).append(run)
    out = {}
    for name, group in {**arms, **{k: [{**v, "seed": None}] for k, v in references.items()}}.items():
        group = sorted(group, key=lambda r: -1 if r["seed"] is None else r["seed"])
        per_seed: dict[str, dict] = {"scar": {}, "mvo": {}, "wall": {}}
        for run in group:
            cases = list(run["per_case"].values())
            key = "-" if run["seed"] is None else str(run["seed"])
            per_seed["scar"][key] = float(np.mean([c["scar"] for c in cases if c["has_scar"]]))
            mvo = [c["mvo"] for c in cases if c["has_mvo"]]
            per_seed["mvo"][key] = float(np.mean(mvo)) if mvo else float("nan")
            per_seed["wall"][key] = float(np.mean([c["wall"] for c in cases]))
        names = list(group[0]["per_case"])

        def seed_mean(exam: str, key: str) -> float:
            return float(np.nanmean([r["per_case"][exam][key] for r in group]))  # noqa: B023

        first = group[0]["per_case"]
        infarct = [n for n in names if first[n]["has_scar"]]
        normals = [n for n in names if not first[n]["has_scar"]]
        pct = np.array([seed_mean(n, "scar_pct") for n in infarct])
        expert_pct = np.array([first[n]["expert_scar_pct"] for n in infarct])
        diff = pct - expert_pct
        mass = np.array([seed_mean(n, "scar_g") for n in names])
        expert_g = np.array([first[n]["expert_scar_g"] for n in names])
        sd = _sd(diff) if len(diff) > 1 else None
        out[name] = {
            "runs": len(group),
            "seeds": [r["seed"] for r in group],
            **{
                f"{k}_dice": {"mean": float(np.nanmean(list(v.values()))), "sd": _sd(list(v.values())), "per_seed": v}
                for k, v in per_seed.items()
            },
            "scar_pct_bias": float(diff.mean()),
            "scar_pct_sd": sd,
            "scar_pct_loa": [float(diff.mean() - 1.96 * sd), float(diff.mean() + 1.96 * sd)]
            if sd is not None
            else None,
            "scar_mass_bias_g": float((mass - expert_g).mean()),
            "scar_mass_wilcoxon_p": float(stats.wilcoxon(mass, expert_g).pvalue)
            if np.any(mass != expert_g) and len(names) > 1
            else None,
            "normals_over_1g": int(sum(seed_mean(n, "scar_g") > FALSE_SCAR_G for n in normals)),
            "normals": len(normals),
            "per_case_scar_dice": {n: seed_mean(n, "scar") for n in infarct},
            "per_case_scar_pct": dict(zip(infarct, [float(v) for v in pct], strict=True)),
            "expert_scar_pct": dict(zip(infarct, [float(v) for v in expert_pct], strict=True)),
        }
    return out


def paired_against_dice_ce(summary: dict, references: Sequence[str] = ()) -> dict:
    """Each loss arm against Dice + CE trained on the same rule's labels (``<rule> / dice_ce``), two ways.

    - ``seed_differences``: infarct Dice (mean over infarct test exams) of the arm minus Dice + CE's, for
      each seed both ran (the same seed gives both the same slice order and augmentation), with their
      mean and sample SD: a gain smaller than that SD is not a gain.
    - ``wilcoxon_p``: Wilcoxon signed-rank over the infarct test exams of each exam's seed-mean infarct
      Dice, arm against Dice + CE (with 9 exams, p = 0.004 is the smallest possible: every exam moved
      the same way).

    ``references`` (the rules' own labels, not trained arms) are left out.
    """
    out = {}
    for name, s in summary.items():
        if name in references or " / " not in name:
            continue
        rule = name.split(" / ")[0]
        reference = summary.get(f"{rule} / dice_ce")
        if reference is None or name == f"{rule} / dice_ce" or rule == "expert":
            continue
        ref = reference["per_case_scar_dice"]
        a = np.array([s["per_case_scar_dice"][n] for n in ref])
        b = np.array(list(ref.values()))
        mine, theirs = s["scar_dice"]["per_seed"], reference["scar_dice"]["per_seed"]
        both = sorted(set(mine) & set(theirs), key=int)
        diffs = [mine[k] - theirs[k] for k in both]
        out[name] = {
            "against": f"{rule} / dice_ce",
            "seeds": [int(k) for k in both],
            "seed_differences": [round(d, 4) for d in diffs],
            "mean_difference": float(np.mean(diffs)),
            "sd_difference": _sd(diffs) if len(diffs) > 1 else None,
            "wilcoxon_p": float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else None,
        }
    return out


def markdown_table(summary: dict, paired: dict, references: Sequence[str] = ()) -> str:
    """The results table: the starting model, then the trained arms, then the rules' own labels."""

    def ms(d, runs):
        if np.isnan(d["mean"]):
            return "-"
        return f"{d['mean']:.3f}" if runs == 1 else f"{d['mean']:.3f} ± {d['sd']:.3f}"

    def order(name):
        return 0 if name.startswith("base") else 2 if name in references else 1

    lines = [
        "| arm | runs | infarct Dice | vs Dice + CE on the same labels | MVO Dice | wall Dice "
        "| scar %LV bias (LoA) | scar mass bias g (Wilcoxon p) | normals > 1 g |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(summary, key=order):
        s = summary[name]
        loa = f" ({s['scar_pct_loa'][0]:+.1f}, {s['scar_pct_loa'][1]:+.1f})" if s["scar_pct_loa"] else ""
        p = f" ({s['scar_mass_wilcoxon_p']:.2f})" if s["scar_mass_wilcoxon_p"] is not None else ""
        vs = "-"
        if name in paired:
            d = paired[name]
            sd = f" ± {d['sd_difference']:.3f}" if d["sd_difference"] is not None else ""
            vs = f"{d['mean_difference']:+.3f}{sd}"
        lines.append(
            f"| {name} | {s['runs']} | {ms(s['scar_dice'], s['runs'])} | {vs} | {ms(s['mvo_dice'], s['runs'])} | "
            f"{ms(s['wall_dice'], s['runs'])} | "
            f"{s['scar_pct_bias']:+.1f}{loa} | {s['scar_mass_bias_g']:+.1f}{p} | "
            f"{s['normals_over_1g']} of {s['normals']} |"
        )
    return "\n".join(lines)


def plots(out: Path, summary: dict, arms: list[str], overlay: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(arms), 3)
    grid = (int(np.ceil(len(arms) / columns)), columns)
    fig, axes = plt.subplots(*grid, figsize=(4.2 * columns, 3.4 * grid[0]), sharey=True, squeeze=False)
    for ax in axes.flat[len(arms) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, arms, strict=False):
        s = summary[name]
        pred = np.array(list(s["per_case_scar_pct"].values()))
        ref = np.array(list(s["expert_scar_pct"].values()))
        mean, diff = (pred + ref) / 2, pred - ref
        ax.scatter(mean, diff, s=14)
        ax.axhline(s["scar_pct_bias"], color="k")
        if s["scar_pct_loa"]:
            for v in s["scar_pct_loa"]:
                ax.axhline(v, color="k", linestyle="--")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("mean of method and expert, scar % LV")
    for row in axes:
        row[0].set_ylabel("method - expert, scar % LV")
    fig.tight_layout()
    fig.savefig(out / "bland_altman.png", dpi=110)
    plt.close(fig)

    panels = overlay["panels"]
    rows, cols = np.nonzero(overlay["heart"])
    box = (slice(max(rows.min() - 25, 0), rows.max() + 25), slice(max(cols.min() - 25, 0), cols.max() + 25))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, label) in zip(axes, panels, strict=True):
        ax.imshow(overlay["image"][box], cmap="gray")
        if label is not None:
            label = label[box]
            colours = np.zeros((*label.shape, 4))
            colours[np.isin(label, LV_WALL)] = (0.2, 0.6, 1.0, 0.25)
            colours[label == SCAR] = (1.0, 0.9, 0.0, 0.6)
            colours[label == MVO] = (1.0, 0.0, 0.3, 0.7)
            ax.imshow(colours)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "overlays.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="the shared real-data folder (holds emidec_png/)")
    parser.add_argument("--out", required=True, help="folder for runs.jsonl, summary.json, table.md and PNGs")
    parser.add_argument("--base", default=str(SHIPPED_MODEL), help="common starting checkpoint of every arm")
    parser.add_argument("--rule", default="3sd", choices=sorted(RULES), help="rule whose labels every loss trains on")
    parser.add_argument(
        "--other-rules", default="5sd,ewa,fwhm", help="rules also trained with --other-losses (comma list)"
    )
    parser.add_argument("--losses", default=",".join(LOSSES), help="losses trained on --rule's labels")
    parser.add_argument(
        "--other-losses", default="dice_ce,rule_soft_target", help="losses trained on --other-rules' labels"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes (augmentation runs there)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 training exams, 3 test, 1 seed, 1 epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.predictions = out / "predictions"
    args.predictions.mkdir(exist_ok=True)

    root = Path(args.real) / "emidec_png"
    cases = emidec_png_cases(root)
    train_cases, test_cases = split_cases(list(cases))
    other_rules = [r for r in dict.fromkeys(args.other_rules.split(",")) if r and r != args.rule]
    losses = [x for x in dict.fromkeys(args.losses.split(",")) if x]
    for name in [args.rule, *other_rules]:
        if name not in RULES:
            parser.error(f"unknown rule {name!r}; choose from {sorted(RULES)}")
    for name in [*losses, *args.other_losses.split(",")]:
        if name not in LOSSES:  # before hours of training, not when the arm comes up
            parser.error(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    if args.quick:
        train_cases = [c for c in train_cases if c.startswith("Case_P")][:3] + [
            c for c in train_cases if c.startswith("Case_N")
        ][:1]
        test_cases = [c for c in test_cases if c.startswith("Case_P")][:2] + [
            c for c in test_cases if c.startswith("Case_N")
        ][:1]
        args.seeds, args.epochs = 1, 1
        losses = ["dice_ce", "rule_soft_target"]
        other_rules = []

    start = time.time()
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    commit = _git_commit()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rules = [args.rule, *other_rules]
    training: dict[str, list[Study]] = {"expert": []}
    training.update({r: [] for r in rules})
    label_agreement: dict[str, dict] = {r: {"per_case": {}} for r in rules}
    refused: dict[str, dict[str, str]] = {}
    for case in train_cases:
        image, expert = read_case(root, cases[case])
        training["expert"].append(as_study(case, image, expert, None))
        for r in rules:
            made = _make(r, image, expert, case, refused)
            if made is not None:
                training[r].append(as_study(case, image, made.label, made.scar_probability))
                label_agreement[r]["per_case"][case] = judge(made.label, expert)
    test = []
    references = {}
    for case in test_cases:
        image, expert = read_case(root, cases[case])
        study = as_study(case, image, expert, None)
        test.append((case, study, study.label[0].numpy()))
        for r in rules:
            made = _make(r, image, expert, case, refused)
            if made is not None:
                references.setdefault(f"{r} labels themselves", {"per_case": {}})["per_case"][case] = judge(
                    made.label, expert
                )
    logger.info(
        "labels made for %d training and %d test exams in %.0f s", len(train_cases), len(test), time.time() - start
    )
    agreement_train = {
        r: float(np.mean([c["scar"] for c in v["per_case"].values() if c["has_scar"]]))
        for r, v in label_agreement.items()
        if any(c["has_scar"] for c in v["per_case"].values())
    }
    logger.info("rule labels vs expert on the training exams, infarct Dice: %s", agreement_train)
    for r, exams in refused.items():
        logger.info("%s refused %d exams, e.g. %s", r, len(exams), next(iter(exams.values())))
    # A rule that refuses most exams would train on a biased remainder (FWHM keeps only scar-free ones on
    # EMIDEC's offset 8-bit images), so it is reported, not trained.
    trainable = {"expert", *(r for r in rules if len(refused.get(r, {})) * 2 <= len(train_cases) + len(test))}
    for r in sorted(set(rules) - trainable):
        logger.info("%s is not trained: it refused %d of %d exams", r, len(refused[r]), len(train_cases) + len(test))
        references.pop(f"{r} labels themselves", None)

    arms = [{"arm": "base (no fine-tuning)", "rule": None, "loss": None, "seed": 0}]
    for seed in range(args.seeds):
        arms.append({"arm": "expert / dice_ce", "rule": "expert", "loss": "dice_ce", "seed": seed})
        arms += [{"arm": f"{args.rule} / {loss}", "rule": args.rule, "loss": loss, "seed": seed} for loss in losses]
        for r in other_rules:
            arms += [
                {"arm": f"{r} / {loss}", "rule": r, "loss": loss, "seed": seed} for loss in args.other_losses.split(",")
            ]

    arms = [a for a in arms if a["rule"] is None or a["rule"] in trainable]
    planned = {(a["arm"], a["seed"]) for a in arms}
    runs_path = out / "runs.jsonl"
    done = []
    if runs_path.exists():
        done = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
    # Judged as inference answers; runs judged before flip averaging became the default lack the key
    # and are not mixed with newer ones.
    settings = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "base": str(args.base),
        "judged_with_flip_tta": True,
    }
    done = [
        r
        for r in done
        if r.get("settings") == settings and r.get("test_cases") == test_cases and (r["arm"], r["seed"]) in planned
    ]
    have = {(r["arm"], r["seed"]) for r in done}
    for arm in arms:
        if (arm["arm"], arm["seed"]) in have:
            continue
        studies = training[arm["rule"]] if arm["rule"] else []
        if not (arm["loss"] and build_loss(arm["loss"]).needs_scar_probability):
            studies = [Study(s.name, s.image, s.label, s.voxel_ml) for s in studies]  # hard labels only
        result = run_arm(arm, studies, test, args)
        result.update(
            settings=settings, test_cases=test_cases, train_cases=len(train_cases), device=device, commit=commit
        )
        with runs_path.open("a") as f:
            f.write(json.dumps(result) + "\n")
        done.append(result)
        logger.info(
            "%s seed %d: infarct Dice %.3f (%.0f s)",
            arm["arm"],
            arm["seed"],
            np.mean([c["scar"] for c in result["per_case"].values() if c["has_scar"]]),
            result["train_seconds"],
        )

    summary = summarise(done, references)
    paired = paired_against_dice_ce(summary, references=list(references))
    report = {
        "command": " ".join(sys.argv),
        "devices": sorted({r.get("device", "not recorded") for r in done}),
        "train_seconds_total": round(sum(r["train_seconds"] for r in done), 1),
        "commits": sorted({r.get("commit", "not recorded") for r in done}),
        "train_cases": train_cases,
        "test_cases": test_cases,
        "settings": settings,
        "rule_labels_vs_expert_train_infarct_dice": agreement_train,
        "refused_exams": {r: {"count": len(v), "exams": v} for r, v in refused.items()},
        "summary": summary,
        "paired_infarct_dice_vs_dice_ce": paired,
        "this_invocation_seconds": round(time.time() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(summary, paired, references=list(references))
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(json.dumps({"paired_infarct_dice_vs_dice_ce": paired, "devices": report["devices"]}, indent=2))

    # Figures: Bland-Altman of scar % LV, and one test slice with the labels and two arms' answers.
    shown = [
        a
        for a in (
            f"{args.rule} labels themselves",
            f"{args.rule} / dice_ce",
            f"{args.rule} / rule_soft_target",
            "5sd / dice_ce",
            "5sd / rule_soft_target",
            "expert / dice_ce",
        )
        if a in summary
    ]
    case = max(
        (c for c in test if np.isin(c[2], TOTAL_SCAR).any()),
        key=lambda c: np.isin(c[2], TOTAL_SCAR).sum(),
        default=test[0],
    )
    name, study, truth = case
    k = int(np.argmax(np.isin(truth, TOTAL_SCAR).sum(axis=(0, 1))))
    image, expert = read_case(root, cases[name])
    panels = [("image", None), ("expert", truth[..., k]), (args.rule, RULES[args.rule](image, expert).label[..., k])]
    for loss in ("dice_ce", "rule_soft_target"):
        saved = args.predictions / f"{args.rule}__{loss}.npz"
        if saved.exists():
            panels.append((f"{args.rule} / {loss}, seed 0", np.load(saved)[name][..., k]))
    heart = truth[..., k] > 0
    logger.info("overlay figure: %s, slice %d", name, k)
    plots(out, summary, shown, {"image": study.image[0, ..., k].numpy(), "heart": heart, "panels": panels})
    logger.info("done in %.0f s; results in %s", time.time() - start, out)


if __name__ == "__main__":
    main()
