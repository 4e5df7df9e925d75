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


def filmstrip(path: str | Path, real: np.ndarray, dream: np.ndarray, every: int = 3, scale: int = 2) -> Path:
    """Real-vs-imagined frames side by side: for each rollout a row of the real frames and, below it,
    the imagined ones, every ``every``-th step (all of them if fewer). ``real``, ``dream``:
    ``uint8 (n, T, H, W, 3)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    if real.shape != dream.shape or real.ndim != 5:
        raise ValueError(f"need matching (n, T, H, W, 3) videos, got {real.shape} and {dream.shape}")
    pick = np.arange(every - 1, real.shape[1], every)  # steps every, 2 every, ...
    if len(pick) == 0:  # a rollout shorter than ``every``: all of it
        pick = np.arange(real.shape[1])
    strips = [
        np.concatenate([np.concatenate(list(r[pick]), 1), np.concatenate(list(d[pick]), 1)], 0)
        for r, d in zip(real, dream, strict=True)
    ]
    gap = np.full((2, strips[0].shape[1], 3), 128, np.uint8)  # a grey line between rollouts
    rows = [x for strip in strips for x in (strip, gap)]
    image = np.concatenate(rows[:-1], 0).repeat(scale, 0).repeat(scale, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, image)
    return path
