"""Figures, markdown and a self-contained HTML page for probe results (matplotlib with the Agg backend)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from simworld.probes.suite import PROBES, badness


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(v)
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


# ---------------------------------------------------------------------- validation


def auc_heatmap(path: str | Path, matrix: dict[str, dict[str, float]], violations: list[str]) -> Path:
    """Heatmap of ROC-AUC, probes (rows) x violations (columns), with the values written in."""
    plt = _plt()
    probes = list(matrix)
    a = np.array([[matrix[p].get(v, np.nan) for v in violations] for p in probes])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(violations), 0.8 + 0.36 * len(probes)), dpi=110)
    im = ax.imshow(a, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(violations)), violations, rotation=40, ha="right")
    ax.set_yticks(range(len(probes)), probes)
    for i in range(len(probes)):
        for j in range(len(violations)):
            if np.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if a[i, j] > 0.8 else "white")  # fmt: skip
    fig.colorbar(im, ax=ax, label="ROC-AUC")
    ax.set_title("probe x violation ROC-AUC (Balls, 64x64)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def detectability_plot(path: str | Path, sweep: dict[str, dict[str, Any]]) -> Path:
    """Best-probe AUC against violation magnitude, one panel per violation family."""
    plt = _plt()
    names = list(sweep)
    cols = min(4, max(len(names), 1))
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        r = sweep[name]["rows"]
        m = [x["magnitude"] for x in r]
        ax.plot(m, [x["auc"].get("law_suite", np.nan) for x in r], "o-", label="law suite (fixed)")
        ax.plot(m, [x["best_auc"] for x in r], "s--", ms=3, lw=0.8, label="best probe (chosen here)")
        ax.axhline(0.95, color="grey", ls="--", lw=0.8)
        ax.set_ylim(0.45, 1.02)
        if name in ("teleport", "velocity_jump"):
            ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(sweep[name]["unit"], fontsize=8)
        ax.set_ylabel("AUC", fontsize=8)
        ax.grid(alpha=0.3)
    if names:
        axes.flat[0].legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("detectability: ROC-AUC vs violation magnitude (grey: 0.95)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def validation_markdown(results: dict[str, Any]) -> str:
    """The validation results as markdown tables (what ``README.md`` in the output folder holds)."""
    viol = list(results["pairs"])
    probes = list(results["auc"])
    cfg = results["config"]
    lines = [
        "# Probe validation",
        "",
        f"Command: `python -m simworld.probes.validate --out {cfg['out']}` "
        f"({cfg['test']} test clips, {cfg['calib']} held-out calibration clips, {cfg['frames']} frames "
        f"each, thresholds at the {cfg['quantile']:.0%} quantile of held-out real badness; "
        f"{results['seconds']:.0f} s).",
        "",
        f"Target: every violation caught by a probe with AUC >= {results['target']['auc']} and false "
        f"positives <= {results['target']['fpr']:.0%} on real videos.",
        "",
        "## Summary",
        "",
        "| violation | magnitude | pairs | best probe | AUC | probes meeting the target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in viol:
        s = results["summary"][v]
        lines.append(
            f"| {v} | {_fmt(s['magnitude'])} {s['unit']} | {results['pairs'][v]} | {s['best_probe']} | "
            f"{_fmt(s['best_auc'])} | {', '.join(s['probes_meeting_target']) or '-'} | "
            f"{'yes' if s['target_met'] else '**no**'} |"
        )
    lines += [
        "",
        f"False positives of the union of all law probes (any over its threshold): "
        f"{results['fpr_any_law_probe']:.1%}.",
        "",
        "## ROC-AUC matrix (rows: probes, columns: violations) and false-positive rate",
        "",
        "| probe | " + " | ".join(viol) + " | FPR | threshold |",
        "|---|" + "---|" * (len(viol) + 2),
    ]
    for p in probes:
        cells = []
        for v in viol:
            a = results["auc"][p][v]
            cells.append(f"**{a:.2f}**" if a >= results["target"]["auc"] else _fmt(a, 2))
        lines.append(
            f"| {p} | "
            + " | ".join(cells)
            + f" | {results['fpr'][p]:.1%} | {_fmt(results['thresholds'][p])} |"
        )
    lines += ["", "## Detectability sweep (best probe per magnitude)", ""]
    for name, sw in results["sweep"].items():
        row = ", ".join(f"{r['magnitude']:g}: {r['best_auc']:.2f} ({r['best_probe']})" for r in sw["rows"])
        lines.append(f"- **{name}** ({sw['unit']}): {row}")
    lines += ["", "![AUC matrix](auc_matrix.png)", "", "![detectability](detectability.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- score reports


def trajectory_plot(
    path: str | Path, dream: Any, real: Any | None, title: str = "", fps: float = 15.0
) -> Path:
    """x(t) and y(t) of every tracked object: dream solid, real dashed (``Tracks`` inputs)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    t = np.arange(len(dream)) / fps
    colors = {"red": "tab:red", "green": "tab:green", "blue": "tab:blue"}
    for k, name in enumerate(dream.names):
        c = colors.get(name, "tab:grey")
        for ax, axis in zip(axes, (0, 1), strict=True):
            ax.plot(t, dream.pos[:, k, axis], color=c, lw=1.3, label=f"{name} dream")
            if real is not None:
                ax.plot(t, real.pos[:, k, axis], color=c, lw=1.0, ls="--", label=f"{name} real")
    for ax, lab in zip(axes, ("x (units)", "y (units)"), strict=True):
        ax.set_xlabel("time (s)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def horizon_plot(path: str | Path, series: dict[str, np.ndarray], ylabel: str, fps: float = 15.0) -> Path:
    """Error against imagined horizon (seconds), one line per named series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3), dpi=110)
    for name, y in series.items():
        y = np.asarray(y, float)
        ax.plot(np.arange(len(y)) / fps, y, label=name, lw=1.3)
    ax.set_xlabel("horizon (s)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bad{background:#fdd}
img{max-width:100%}video{image-rendering:pixelated;margin:4px}"""


def score_table(columns: dict[str, dict[str, float]], thresholds: dict[str, float] | None = None) -> str:
    """An HTML table: one row per probe, one column per named score dict (e.g. dream, real, tokenizer)."""
    thresholds = thresholds or {}
    names = [p for p in PROBES if any(p in c for c in columns.values())]
    extra = sorted({k for c in columns.values() for k in c} - set(PROBES))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for p in names + extra:
        info = PROBES.get(p)
        cells = []
        for c in columns.values():
            v = c.get(p)
            bad = info is not None and p in thresholds and v is not None and _over(p, v, thresholds[p])
            cells.append(f"<td class='{'bad' if bad else ''}'>{_fmt(v)}</td>")
        units = html.escape(info.units) if info else ""
        law = html.escape(info.law) if info else ""
        thr = _fmt(thresholds.get(p)) if p in thresholds else ""
        rows.append(f"<tr><td title='{law}'>{p}</td>{''.join(cells)}<td>{units}</td><td>{thr}</td></tr>")
    return (
        f"<table><tr><th>probe</th>{head}<th>units</th><th>threshold (badness)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _over(name: str, value: float, threshold: float) -> bool:
    return badness(name, value) > threshold


def write_html(path: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """A standalone page: ``sections`` are ``(heading, html body)``; media paths are relative to ``path``."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, b in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def video_tag(src: str, caption: str = "") -> str:
    cap = f"<div>{html.escape(caption)}</div>" if caption else ""
    return f"<figure style='display:inline-block'><video src='{html.escape(src)}' controls loop muted autoplay></video>{cap}</figure>"


def img_tag(src: str) -> str:
    return f"<img src='{html.escape(src)}'>"
