"""The probe suite: every probe by name, with its units and direction, run on one video.

``score_video(frames, spec)`` runs the probes that need no ground truth; passing ``reference`` (the
ground-truth video from the same start) adds the comparison probes, and ``variance_reference`` (a
second ground-truth run from a jittered start) adds the Physics-IQ normalised scores. Every probe's
*badness* (0 is perfect, larger is less physical) is what thresholds and ROC curves use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simworld.probes import compare, laws
from simworld.probes.contacts import contacts
from simworld.probes.tracker import Tracks, check_frames, track
from simworld.probes.world import WorldSpec


@dataclass(frozen=True)
class Probe:
    """A probe's identity card.

    Attributes:
        name: key in every score dict.
        units: units of the value.
        best: the value of a perfect video; badness is ``|value - best|`` in the bad direction.
        worse: ``"higher"`` or ``"lower"``: which way is less physical.
        reference: needs a ground-truth video.
        law: what it checks, in a few words.
    """

    name: str
    units: str
    best: float
    worse: str
    reference: bool
    law: str


_P = [
    Probe("continuity", "units", 0.0, "higher", False, "largest step beyond the physically possible"),
    Probe("inertia", "units", 0.0, "higher", False, "residual of inertial fit in free flight"),
    Probe("inertia_local", "units", 0.0, "higher", False, "3-frame inertial residual in free flight"),
    Probe("gravity_error", "fraction of g", 0.0, "higher", False, "fitted free-flight acceleration vs g"),
    Probe("energy_change", "fraction of KE", 0.0, "higher", False, "energy across collisions"),
    Probe("momentum_change", "fraction of sum m|v|", 0.0, "higher", False, "momentum across collisions"),
    Probe("size_change", "fraction of radius", 0.0, "higher", False, "size constancy"),
    Probe("shape_change", "fraction of compactness", 0.0, "higher", False, "shape constancy"),
    Probe("permanence", "fraction of frames", 1.0, "lower", False, "object count per colour is constant"),
    Probe("overlap", "units", 0.0, "higher", False, "solidity: objects interpenetrating"),
    Probe("wall_penetration", "units", 0.0, "higher", False, "solidity: reaching through walls"),
    Probe("velocity_error", "units/s", 0.0, "higher", True, "velocity vs ground truth (PhyWorld)"),
    Probe("ade", "units", 0.0, "higher", True, "average displacement error vs ground truth"),
    Probe("fde", "units", 0.0, "higher", True, "final displacement error vs ground truth"),
    Probe("spatial_iou", "IoU", 1.0, "lower", True, "where motion happened (Physics-IQ)"),
    Probe("spatiotemporal_iou", "IoU", 1.0, "lower", True, "where and when motion happened"),
    Probe("weighted_spatial_iou", "IoU", 1.0, "lower", True, "how much motion happened where"),
    Probe("mse", "[0,1]^2", 0.0, "higher", True, "pixel MSE (Physics-IQ)"),
    Probe("psnr", "dB", 100.0, "lower", True, "frame fidelity (control, not physics)"),
    Probe("ssim", "", 1.0, "lower", True, "frame fidelity (control, not physics)"),
]
PROBES: dict[str, Probe] = {p.name: p for p in _P}
LAW_PROBES = tuple(p.name for p in _P if not p.reference)
# The suite as one detector, max_p badness_p / threshold_p, passes 99% of held-out real clips below this
# (validation: AUC >= 0.94 on every violation, 3.3% false positives on test clips).
SUITE_THRESHOLD = 1.22
MIN_THRESHOLD = 1e-3  # thresholds of 0 (permanence) count as this
REFERENCE_PROBES = tuple(p.name for p in _P if p.reference)

# Badness above which a real Balls video (64x64, 15 fps, 48 frames) is called implausible: the 99th
# percentile over 60 held-out real clips, from `python -m simworld.probes.validate --out
# docs/probe_validation` (thresholds.json there). Comparison probes: against a jittered-start twin.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "continuity": 0.736,
    "inertia": 0.00305,
    "inertia_local": 0.0108,
    "gravity_error": 0.00561,
    "energy_change": 0.0433,
    "momentum_change": 0.00755,
    "size_change": 0.0119,
    "shape_change": 0.0279,
    "permanence": 0.0,
    "overlap": 0.0796,
    "wall_penetration": 0.141,
    "velocity_error": 2.16,
    "ade": 0.767,
    "fde": 4.7,
    "spatial_iou": 0.331,
    "spatiotemporal_iou": 0.348,
    "weighted_spatial_iou": 0.378,
    "mse": 0.00394,
    "psnr": 61.0,
    "ssim": 0.0576,
}


def badness(name: str, value: float) -> float:
    """How far ``value`` of probe ``name`` is from a perfect video, in the bad direction (``nan`` -> 0)."""
    p = PROBES[name]
    if value is None or not math.isfinite(value):
        return 0.0
    return max(value - p.best, 0.0) if p.worse == "higher" else max(p.best - value, 0.0)


def violation_from_badness(
    bad: dict[str, float], thresholds: dict[str, float] | None = None, probes: tuple[str, ...] = LAW_PROBES
) -> float:
    """``max_p badness_p / max(threshold_p, MIN_THRESHOLD)`` over ``probes`` that have a threshold."""
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    ratios = [bad[n] / max(thresholds[n], MIN_THRESHOLD) for n in probes if n in bad and n in thresholds]
    return max(ratios, default=0.0)


def violation(
    scores: dict[str, float], thresholds: dict[str, float] | None = None, probes: tuple[str, ...] = LAW_PROBES
) -> float:
    """How implausible a video is: its worst probe's badness as a multiple of that probe's threshold.

    ``max_p badness_p / max(threshold_p, 1e-3)`` over the law probes (the floor keeps a threshold of 0,
    e.g. permanence, which real videos never break, from dividing by zero). Above 1 a probe is beyond
    what real videos showed; above ``SUITE_THRESHOLD`` the suite as a whole calls the video implausible.
    """
    return violation_from_badness(
        {n: badness(n, v) for n, v in scores.items() if n in PROBES}, thresholds, probes
    )


def law_scores(tracks: Tracks, spec: WorldSpec) -> dict[str, float]:
    """The probes that need no ground truth, on already computed tracks (see :data:`PROBES`)."""
    c = contacts(tracks, spec)
    out: dict[str, float] = {"continuity": laws.continuity(tracks, spec)}
    if any(o.ballistic for o in spec.objects):
        fits = laws.fit_free_flight(tracks, spec, c)
        cons = laws.conservation(tracks, spec, fits, c)
        out |= {
            "inertia": laws.inertia(fits),
            "inertia_local": laws.inertia_local(tracks, spec, c),
            "gravity_fit": laws.gravity_fit(fits),
            "gravity_error": laws.gravity_error(fits, spec),
            "energy_change": cons.energy,
            "momentum_change": cons.momentum,
            "collisions": float(cons.events),
        }
    size, shape = laws.size_constancy(tracks, spec, c)
    overlap, wall = laws.solidity(tracks, spec, c)
    out |= {
        "size_change": size,
        "shape_change": shape,
        "permanence": laws.permanence(tracks),
        "overlap": overlap,
        "wall_penetration": wall,
    }
    return out


def score_video(
    frames: np.ndarray,
    spec: WorldSpec,
    reference: np.ndarray | None = None,
    variance_reference: np.ndarray | None = None,
) -> dict[str, float]:
    """Score one video with every probe that applies.

    Args:
        frames: ``uint8 (T, H, W, 3)`` at the world's frame size.
        spec: the world.
        reference: ground truth from the same start with the same actions, same shape as ``frames``.
        variance_reference: a second ground-truth run from a slightly jittered start (Physics-IQ's
            physical variance); adds ``<motion score>_norm`` keys.

    Returns:
        Probe name -> value (see :data:`PROBES` for units and direction; ``nan`` = no evidence), plus
        ``gravity_fit`` (units/s^2), ``collisions`` (events tested) and ``frames``.

    Raises:
        ValueError: for frames of the wrong size or dtype, or a reference of another shape.
    """
    frames = check_frames(frames, spec)
    tr = track(frames, spec)
    out = {"frames": float(len(frames)), **law_scores(tr, spec)}
    if reference is not None:
        reference = check_frames(reference, spec, "reference frames")
        if reference.shape != frames.shape:
            raise ValueError(
                f"the reference video has shape {reference.shape} but the video has {frames.shape}: "
                "they must cover the same frames"
            )
        ref = track(reference, spec)
        ve, _ = compare.velocity_error(tr, ref)
        te = compare.trajectory_error(tr, ref)
        out |= {"velocity_error": ve, "ade": te["ade"], "fde": te["fde"], "track_miss": te["miss"]}
        motion = compare.motion_scores(frames, reference)
        out |= motion
        fid = compare.fidelity(frames, reference)
        out |= {"psnr": fid["psnr"], "ssim": fid["ssim"]}
        if variance_reference is not None:
            variance_reference = check_frames(variance_reference, spec, "variance reference frames")
            variance = compare.motion_scores(variance_reference, reference)
            norm = compare.normalise_by_variance(motion, variance)
            out |= {f"{k}_norm": v for k, v in norm.items()}
            out |= {f"{k}_variance": v for k, v in variance.items()}
    return out


def per_step_errors(frames: np.ndarray, reference: np.ndarray, spec: WorldSpec) -> dict[str, Any]:
    """Error against ground truth at every step, for error-vs-horizon plots.

    Returns:
        ``{"position": (T,) units, "velocity": (T,) units/s, "psnr": (T,) dB, "tracks": (a, b)}``.
    """
    a, b = track(frames, spec), track(reference, spec)
    _, vel = compare.velocity_error(a, b)
    te = compare.trajectory_error(a, b)
    fid = compare.fidelity(frames, reference)
    return {"position": te["per_step"], "velocity": vel, "psnr": fid["psnr_per_step"], "tracks": (a, b)}
