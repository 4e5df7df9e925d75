"""Physics-consistency probes: scores a physicist would trust, read off pixels.

A colour tracker (:func:`track`) turns frames of a flat-coloured world into per-object positions and
sizes in world units; probes (:mod:`simworld.probes.laws`, :mod:`simworld.probes.compare`) check laws
on them; :func:`score_video` runs the suite. :mod:`simworld.probes.violations` makes matched
impossible videos and :mod:`simworld.probes.validate` measures how well each probe tells them apart.
Worlds without flat colours get a learned :class:`StateReadout` instead of the tracker.
"""

from simworld.probes.compare import (
    action_responsiveness,
    fidelity,
    motion_masks,
    motion_scores,
    normalise_by_variance,
    trajectory_error,
    velocity_error,
)
from simworld.probes.laws import (
    conservation,
    continuity,
    fit_free_flight,
    gravity_error,
    gravity_fit,
    inertia,
    inertia_local,
    permanence,
    size_constancy,
    solidity,
)
from simworld.probes.online import EpisodeScorer
from simworld.probes.readout import ReadoutConfig, StateReadout, load_readout, save_readout, train_readout
from simworld.probes.score import load_sidecar, score_checkpoint, score_file, write_sidecar
from simworld.probes.suite import (
    DEFAULT_THRESHOLDS,
    LAW_PROBES,
    PROBES,
    REFERENCE_PROBES,
    badness,
    law_scores,
    score_video,
    violation,
)
from simworld.probes.tracker import Tracks, coverage, track
from simworld.probes.world import ObjectSpec, WorldSpec

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LAW_PROBES",
    "PROBES",
    "REFERENCE_PROBES",
    "EpisodeScorer",
    "ObjectSpec",
    "ReadoutConfig",
    "StateReadout",
    "Tracks",
    "WorldSpec",
    "action_responsiveness",
    "badness",
    "conservation",
    "continuity",
    "coverage",
    "fidelity",
    "fit_free_flight",
    "gravity_error",
    "gravity_fit",
    "inertia",
    "inertia_local",
    "law_scores",
    "load_readout",
    "load_sidecar",
    "motion_masks",
    "motion_scores",
    "normalise_by_variance",
    "permanence",
    "save_readout",
    "score_checkpoint",
    "score_file",
    "score_video",
    "size_constancy",
    "solidity",
    "track",
    "train_readout",
    "trajectory_error",
    "velocity_error",
    "violation",
    "write_sidecar",
]
