"""Small figures written as PNG (matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_series(
    path: str | Path,
    series: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    title: str = "",
    vlines: list[int] | None = None,
) -> Path:
    """Line plot of named series against step index; ``vlines`` mark events (e.g. restarts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    for name, y in series.items():
        y = np.asarray(y, dtype=float)
        ax.plot(np.arange(1, len(y) + 1), np.minimum(y, 100.0), label=name, lw=1.2)
    for x in vlines or []:
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
