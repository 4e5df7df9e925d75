"""Scoring an episode frame by frame, as a dream generates it (the engine of the probe wrappers)."""

from __future__ import annotations

import math

import numpy as np

from simworld.probes.suite import LAW_PROBES, law_scores, violation
from simworld.probes.tracker import Tracks, track
from simworld.probes.world import WorldSpec

STEP_KEYS = (*LAW_PROBES, "violation")
# fits over many free-flight windows and collisions: judged per step only once the window is full
GLOBAL_PROBES = ("gravity_error", "energy_change", "momentum_change")
LOCAL_PROBES = tuple(p for p in LAW_PROBES if p not in GLOBAL_PROBES)


def empty_scores() -> dict[str, float]:
    """Per-step scores before there is anything to judge: ``nan`` probes, violation 0."""
    return {**{k: math.nan for k in LAW_PROBES}, "violation": 0.0}


class EpisodeScorer:
    """Keeps an episode's tracks and scores each new frame with the no-ground-truth probes.

    Per-step scores are the law probes on the last ``window`` frames, except ``permanence``, which
    compares the current frame's object counts with the episode's first frame (an object that vanished
    long ago is still missing). ``violation`` is the largest badness as a multiple of its threshold
    (see :func:`simworld.probes.suite.violation`); until ``window`` frames have been seen it leaves out
    the probes that fit many windows or collisions (``GLOBAL_PROBES``), too noisy on a short video.
    Tracking a new frame costs well under a millisecond; the window's probes a few milliseconds.

    Args:
        spec: the world.
        thresholds: badness thresholds (default: ``suite.DEFAULT_THRESHOLDS``).
        window: frames the per-step probes look back over (48: the clip length the thresholds were
            calibrated on; shorter windows make the global fits, e.g. gravity, noisier than calibrated).
    """

    def __init__(self, spec: WorldSpec, thresholds: dict[str, float] | None = None, window: int = 48) -> None:
        self.spec = spec
        self.thresholds = thresholds
        self.window = int(window)
        self._parts: list[Tracks] = []
        self._tail: Tracks | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def reset(self, frame: np.ndarray | Tracks) -> dict[str, float]:
        """Start a new episode at ``frame`` (``uint8 (H, W, 3)`` or its one-frame tracks)."""
        tr = frame if isinstance(frame, Tracks) else track(frame[None], self.spec)
        self._parts = [tr]
        self._tail = tr
        return empty_scores()

    def add(self, frame: np.ndarray | Tracks) -> dict[str, float]:
        """Append the next frame and return its per-step scores."""
        if self._tail is None:
            return self.reset(frame)
        tr = frame if isinstance(frame, Tracks) else track(frame[None], self.spec)
        self._parts.append(tr)
        self._tail = Tracks.concat([self._tail, tr])[-self.window :]
        scores = law_scores(self._tail, self.spec)
        first = self._parts[0].count[0]
        scores["permanence"] = float((tr.count[0] == first).mean())
        out = {k: scores.get(k, math.nan) for k in LAW_PROBES}
        judged = LAW_PROBES if len(self._tail) >= self.window else LOCAL_PROBES
        out["violation"] = violation(out, self.thresholds, judged)
        return out

    def tracks(self) -> Tracks:
        """All of the episode's tracks so far."""
        if not self._parts:
            raise RuntimeError("no episode yet: call reset(frame) first")
        if len(self._parts) > 1:
            self._parts = [Tracks.concat(self._parts)]
        return self._parts[0]

    def summary(self) -> dict[str, float]:
        """Law probes on the whole episode so far, plus ``violation`` and ``frames``."""
        scores = law_scores(self.tracks(), self.spec)
        out = {k: scores.get(k, math.nan) for k in LAW_PROBES}
        out["violation"] = violation(out, self.thresholds)
        out["frames"] = float(len(self))
        return out
