"""Fixed-length windows of consecutive frames from an episode store, for training sequence models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch.utils.data

from simworld.data.store import EpisodeStore


def _window_index(
    store: EpisodeStore, length: int, episode_ids: Sequence[int] | None, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every valid ``(episode, start)``: ``start + length <= T + 1``, starts a multiple of ``stride``."""
    if length < 1:
        raise ValueError(f"window length must be >= 1 frame, got {length}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    ids = store.episode_ids if episode_ids is None else list(episode_ids)
    eps, starts = [], []
    for eid in ids:
        n_frames = store.num_steps(eid) + 1
        s = np.arange(0, n_frames - length + 1, stride, dtype=np.int64)  # empty if the episode is too short
        eps.append(np.full(len(s), eid, dtype=np.int64))
        starts.append(s)
    if not eps:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(eps), np.concatenate(starts)


class WindowDataset(torch.utils.data.Dataset):
    """All windows of ``length`` consecutive frames in a store (never crossing an episode end).

    Item ``i`` is :meth:`EpisodeStore.read_window` output (numpy arrays) plus ``episode`` and
    ``start`` ints. Works with ``torch.utils.data.DataLoader`` and worker processes; batches of
    windows from episodes with and without states (imported videos) need ``collate_windows``.

    Args:
        store: The episode store.
        length: Frames per window ``L``; episodes with fewer than ``L`` frames are skipped.
        episode_ids: Episodes to draw from (e.g. one side of :meth:`EpisodeStore.split`); all if None.
        stride: Distance between consecutive window starts within an episode.
    """

    def __init__(
        self, store: EpisodeStore, length: int, episode_ids: Sequence[int] | None = None, stride: int = 1
    ) -> None:
        self.store = store
        self.length = length
        self.stride = stride
        self.episodes, self.starts = _window_index(store, length, episode_ids, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for a dataset of {len(self)} windows")
        eid, start = int(self.episodes[i]), int(self.starts[i])
        item = self.store.read_window(eid, start, self.length)
        item["episode"] = eid
        item["start"] = start
        return item


def collate_windows(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack window dicts into a batch of numpy arrays (``frames (B, L, H, W, 3)`` ...).

    ``states`` keeps only the keys every window has, so imported (state-less) episodes can be
    mixed with collected ones. Usable as a DataLoader ``collate_fn``.
    """
    if not items:
        raise ValueError("cannot collate an empty list of windows")
    batch: dict[str, Any] = {
        k: np.stack([it[k] for it in items])
        for k in ("frames", "actions", "rewards", "terminated", "truncated")
    }
    common = set(items[0]["states"]).intersection(*(it["states"] for it in items[1:]))
    batch["states"] = {k: np.stack([it["states"][k] for it in items]) for k in sorted(common)}
    batch["episode"] = np.array([it["episode"] for it in items], dtype=np.int64)
    batch["start"] = np.array([it["start"] for it in items], dtype=np.int64)
    return batch


def sample_windows(
    store: EpisodeStore,
    length: int,
    batch_size: int,
    rng: np.random.Generator,
    episode_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Draw ``batch_size`` windows uniformly (with replacement) over all valid windows.

    Args:
        store: The episode store.
        length: Frames per window.
        batch_size: Number of windows.
        rng: Source of randomness.
        episode_ids: Episodes to draw from; all if None.

    Returns:
        A batch as built by :func:`collate_windows`.

    Raises:
        ValueError: If no episode has ``length`` frames.
    """
    # Uniform over windows (not episodes): pick an episode with weight = its number of windows.
    ids = store.episode_ids if episode_ids is None else list(episode_ids)
    counts = np.array([max(0, store.num_steps(e) + 2 - length) for e in ids], dtype=np.int64)
    if counts.sum() == 0:
        raise ValueError(f"no episode among {len(ids)} has {length} frames to make a window")
    flat = rng.integers(0, counts.sum(), size=batch_size)
    cum = np.cumsum(counts)
    which = np.searchsorted(cum, flat, side="right")
    starts = flat - (cum[which] - counts[which])
    items = []
    for w, s in zip(which, starts, strict=True):
        item = store.read_window(ids[w], int(s), length)
        item["episode"], item["start"] = ids[w], int(s)
        items.append(item)
    return collate_windows(items)


def measure_store(
    store: EpisodeStore, window_length: int = 16, n: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Measure storage cost and random-window read speed of a store.

    Args:
        store: The store to measure (needs at least one episode of ``window_length`` frames).
        window_length: Frames per window read.
        n: Number of random windows to read.
        seed: Seed of the window choice.

    Returns:
        ``bytes_per_frame`` (episode files / frames), ``raw_bytes_per_frame`` (H * W * 3),
        ``windows_per_s`` and ``frames_per_s`` of random ``read_window`` calls in this process,
        plus ``episodes``, ``frames`` and ``bytes_on_disk``.
    """
    episode_bytes = sum(store.episode_path(e).stat().st_size for e in store.episode_ids)
    frames = store.num_frames
    dataset = WindowDataset(store, window_length)
    if len(dataset) == 0:
        raise ValueError(f"store {store.root} has no episode with {window_length} frames")
    order = np.random.default_rng(seed).integers(0, len(dataset), size=n)
    t0 = time.perf_counter()
    for i in order:
        dataset[int(i)]
    dt = time.perf_counter() - t0
    h, w = store.meta.frame_size
    return {
        "episodes": float(len(store)),
        "frames": float(frames),
        "bytes_on_disk": float(store.bytes_on_disk()),
        "bytes_per_frame": episode_bytes / max(frames, 1),
        "raw_bytes_per_frame": float(h * w * 3),
        "windows_per_s": n / dt,
        "frames_per_s": n * window_length / dt,
    }
