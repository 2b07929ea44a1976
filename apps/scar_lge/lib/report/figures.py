"""The report drawn: an AHA bullseye (PNG) and a one-page PDF with the bullseye, the figures and overlays."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the server and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

from ..constants import LV_CAVITY, MVO, MYOCARDIUM, NUM_CLASSES  # noqa: E402
from ..dicom_seg import SEGMENTS  # noqa: E402
from . import aha  # noqa: E402

# One colour per transmurality class, white (no scar) to dark red (76-100 %), so the bullseye reads as a
# viability map: the darker, the less likely to recover.
CLASS_COLOURS = {"0": "#ffffff", "1-25": "#fde0c5", "26-50": "#f9a66c", "51-75": "#e0452b", "76-100": "#8b0000"}
NOT_COMPUTED_COLOUR = "#bdbdbd"
# Ring radii of the basal, mid and apical levels (outside in), and the apex cap's hole.
_RINGS = {"basal": (0.75, 1.0), "mid": (0.5, 0.75), "apical": (0.25, 0.5)}


def _wedge_angles(segment: int) -> tuple[float, float]:
    """Matplotlib angles (degrees anticlockwise from 3 o'clock) of a segment in the standard bullseye.

    Viewed from the apex: anterior at 12 o'clock, septum to the left (9 o'clock), the segments numbered
    anticlockwise, as in Cerqueira et al.'s figure.
    """
    width = aha.RING_SEGMENT_DEG if segment <= 12 else aha.APICAL_SEGMENT_DEG
    index = (segment - 1) % 6 if segment <= 12 else segment - 13
    centre = 90.0 + width * index
    return centre - width / 2, centre + width / 2


def draw_bullseye(ax, report: dict) -> None:
    """Draw the report's AHA segments on ``ax``: colour = transmurality class, text = number and extent."""
    segments = {s["segment"]: s for s in report["aha"]["segments"] or []}
    for number in aha.SEGMENT_NAMES:
        inner, outer = _RINGS[aha.SEGMENT_LEVEL[number]]
        start, end = _wedge_angles(number)
        row = segments.get(number, {})
        colour = CLASS_COLOURS.get(row.get("transmurality_class"), NOT_COMPUTED_COLOUR)
        ax.add_patch(Wedge((0, 0), outer, start, end, width=outer - inner, facecolor=colour, edgecolor="black"))
        middle = np.radians((start + end) / 2)
        radius = (inner + outer) / 2
        extent = row.get("transmural_extent_percent")
        text = f"{number}\n{extent:.0f}%" if extent is not None else f"{number}\n-"
        dark = row.get("transmurality_class") in aha.OVER_HALF_TRANSMURAL
        ax.text(
            radius * np.cos(middle),
            radius * np.sin(middle),
            text,
            ha="center",
            va="center",
            fontsize=8,
            color="white" if dark else "black",
        )
    ax.add_patch(Wedge((0, 0), 0.25, 0, 360, facecolor=NOT_COMPUTED_COLOUR, edgecolor="black"))
    ax.text(0, 0, "17\nn/i", ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    anchor = report["aha"]["anchor"]["source"]
    ax.set_title(f"AHA segments, transmural extent (anchor: {anchor or 'none'})", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="black") for c in CLASS_COLOURS.values()]
    ax.legend(
        handles,
        [f"{k} %" for k in CLASS_COLOURS],
        loc="lower center",
        ncol=5,
        fontsize=7,
        bbox_to_anchor=(0.5, -0.08),
        frameon=False,
    )
    if not segments:
        reason = report["null_reasons"].get("aha.segments", "")
        ax.text(0, -1.0, f"segments not computed: {reason}"[:110], ha="center", fontsize=6, wrap=True)


def save_bullseye(report: dict, path: str) -> str:
    """Write the bullseye as a PNG; returns ``path``."""
    fig, ax = plt.subplots(figsize=(4.2, 4.4), dpi=150)
    try:
        draw_bullseye(ax, report)
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _value(value, unit: str = "", digits: int = 1) -> str:
    return "not computed" if value is None else f"{value:.{digits}f}{unit}"


def _summary_lines(report: dict) -> list[str]:
    study, grey = report["study"], report["grey_zone"]
    return [
        f"LV myocardial mass: {_value(study['lv_myocardial_mass_g'], ' g')}",
        f"Scar (incl. MVO): {_value(study['scar_mass_g'], ' g')}, "
        f"{_value(study['scar_percent_lv_mass'], ' % of LV mass')}",
        f"MVO: {_value(study['mvo_mass_g'], ' g', 2)}, {_value(study['mvo_percent_lv_mass'], ' % of LV mass', 2)}",
        f"Grey zone: {_value(grey['mass_g'], ' g')}, {_value(grey['percent_lv_mass'], ' % of LV mass')}, "
        f"{_value(grey['percent_of_scar'], ' % of scar')}",
        f"Scar-bearing slices: {study['scar_slices'] if study['scar_slices'] is not None else 'not computed'}",
        f"Segments with scar: {report['aha']['segments_with_scar']}; more than 50 % transmural: "
        f"{report['aha']['segments_over_50_percent_transmural']}",
    ]


def _overlay_slices(report: dict, n: int = 3) -> list[int]:
    """Up to ``n`` slices to show: those with most scar, else those with most wall, in slice order."""
    rows = [r for r in report["slices"] if r["lv_wall_area_mm2"]]
    rows.sort(key=lambda r: (r["scar_area_mm2"] or 0, r["lv_wall_area_mm2"] or 0), reverse=True)
    return sorted(r["slice"] for r in rows[:n])


def standard_view(plane: np.ndarray, spacing_mm, anchor: dict) -> tuple[np.ndarray, float]:
    """A slice turned and flipped (no resampling) so that ``imshow`` shows it as the bullseye is read.

    Anterior up and the septum to the left, as a short-axis view is shown, when the report has an anchor
    (the anterior segment's middle is half a segment from the anterior RV insertion, away from the septum);
    otherwise the image as stored (rows of the array along +j). Of the eight turns and flips of the array
    the one that brings anterior closest to up with the septum on the left is used.

    Returns:
        (array for ``imshow``, its pixel aspect, height over width).
    """
    transposed, flip_rows, flip_cols = True, False, False
    if anchor.get("anterior_insertion_image_deg") is not None and anchor.get("septal_sense"):
        sense = anchor["septal_sense"]
        anterior = np.radians(anchor["anterior_insertion_image_deg"] - sense * aha.ANTERIOR_CENTRE_FROM_INSERTION_DEG)
        septal = anterior + sense * np.pi / 2
        best = -np.inf
        for t in (False, True):
            for fr in (False, True):
                for fc in (False, True):
                    # Screen (x right, y up) of an image-plane direction (di, dj): imshow puts array rows down,
                    # columns right; the array's rows are i (j when transposed).
                    def screen(angle, t=t, fr=fr, fc=fc):
                        di, dj = np.cos(angle), np.sin(angle)
                        row, col = (dj, di) if t else (di, dj)
                        return np.array([-col if fc else col, row if fr else -row])

                    score = screen(anterior) @ (0.0, 1.0) + screen(septal) @ (-1.0, 0.0)
                    if score > best:
                        best, (transposed, flip_rows, flip_cols) = score, (t, fr, fc)
    view = plane.T if transposed else plane
    view = view[::-1] if flip_rows else view
    view = view[:, ::-1] if flip_cols else view
    row_mm, col_mm = (spacing_mm[1], spacing_mm[0]) if transposed else (spacing_mm[0], spacing_mm[1])
    return view, float(row_mm / col_mm)


def save_pdf(report: dict, image: np.ndarray, label: np.ndarray, path: str, *, title: str = "") -> str:
    """Write the one-page A4 report: figures, bullseye, overlays of up to 3 slices, warnings; returns ``path``.

    Args:
        report: :func:`lib.report.build.build_report`'s dict.
        image: (x, y, z) LGE signal.
        label: (x, y, z) EMIDEC classes of the report.
        path: output PDF path.
        title: the study's name for the heading.
    """
    # The SEG colours, so the PDF shows each structure as the viewers do; scar and MVO opaque enough to read.
    colours = np.zeros((NUM_CLASSES, 4))
    for value, segment in SEGMENTS.items():
        colours[value, :3] = np.asarray(segment.rgb) / 255.0
        colours[value, 3] = 0.25 if value in (LV_CAVITY, MYOCARDIUM) else 0.75
    overlay = ListedColormap(colours)
    fig = plt.figure(figsize=(8.27, 11.69), dpi=100)
    try:
        fig.suptitle(f"LGE scar report {title}".strip(), fontsize=14, y=0.975)
        fig.text(0.06, 0.935, "\n".join(_summary_lines(report)), fontsize=9, va="top", family="monospace")
        draw_bullseye(fig.add_axes((0.52, 0.49, 0.42, 0.30)), report)
        rows = fig.add_axes((0.06, 0.52, 0.42, 0.25))
        rows.axis("off")
        table = [
            [
                r["slice"],
                r["level"] or "-",
                _value(r["scar_area_mm2"], "", 0),
                _value(r["mean_transmurality_percent"]),
                _value(r["max_transmurality_percent"]),
            ]
            for r in report["slices"]
        ][:16]
        if table:
            rows.table(
                cellText=table,
                colLabels=["slice", "level", "scar mm2", "mean tr. %", "max tr. %"],
                loc="upper center",
                fontsize=7,
            ).auto_set_font_size(True)
        for n, k in enumerate(_overlay_slices(report)):
            ax = fig.add_axes((0.06 + n * 0.30, 0.17, 0.28, 0.27))
            anchor = report["aha"]["anchor"]
            shown, aspect = standard_view(image[..., k], report["spacing_mm"], anchor)
            ax.imshow(shown, cmap="gray", origin="upper", aspect=aspect)
            shown_label, _ = standard_view(label[..., k], report["spacing_mm"], anchor)
            ax.imshow(
                np.ma.masked_equal(shown_label, 0),
                aspect=aspect,
                cmap=overlay,
                vmin=0,
                vmax=MVO,
                origin="upper",
                interpolation="nearest",
            )
            ax.set_title(f"slice {k}", fontsize=8)
            ax.axis("off")
        notes = [f"- {w['message']}" for w in report["warnings"]]
        notes += [f"- {field}: {reason}" for field, reason in report["null_reasons"].items()]
        notes += [f"Transmurality: {report['transmurality_rule']}", f"Grey zone: {report['grey_zone']['rule']}"]
        fig.text(0.06, 0.15, "\n".join(_wrap(n) for n in notes)[:4000], fontsize=6.5, va="top")
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _wrap(text: str, width: int = 150) -> str:
    return textwrap.fill(text, width=width, subsequent_indent="  ")
