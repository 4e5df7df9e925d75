"""Where objects could be touching something, read from tracks: the gaps that split free flight.

Between two frames an object can only have hit a wall or another object if the gap closed and opened
again within the step: the gaps at the two frames add up to no more than the distance the object
could travel towards the obstacle (along the wall's normal, or relative to the other object).
Intervals with no such possible contact are *free flight*: there, Newton's first law with uniform
gravity says the path is an exact parabola, which the law probes test.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simworld.probes.tracker import Tracks
from simworld.probes.world import WALLS, WorldSpec

WINDOW = 7  # frames per free-flight fit: long enough to see curvature, short enough to fit between bounces
_MARGIN = 0.05  # units of slack on every contact test (tracker error is ~0.005)


@dataclass
class Contacts:
    """Per-object geometry and possible contacts.

    Attributes:
        size: ``(K,)`` robust size of each object (disk radius; box/square half extent), units.
        half: ``(K, 2)`` robust half extents (boxes), units.
        wall_gap: ``(T, K)`` smallest edge-to-wall distance over the solid walls, units.
        pair_gap: ``(T, K, K)`` edge-to-edge distance between solid objects, units (``inf`` if unknown).
        wall: ``(T-1, K)`` a wall contact is possible during the interval ``t -> t+1``.
        wall_sides: ``(T-1, K, 4)`` the same per wall, in ``WALLS`` order.
        pair: ``(T-1, K, K)`` a contact between two objects is possible during the interval.
        free: ``(T-1, K)`` free flight: both frames reliable and no contact possible.
    """

    size: np.ndarray
    half: np.ndarray
    wall_gap: np.ndarray
    pair_gap: np.ndarray
    wall: np.ndarray
    wall_sides: np.ndarray
    pair: np.ndarray
    free: np.ndarray


def robust_sizes(tracks: Tracks, spec: WorldSpec) -> tuple[np.ndarray, np.ndarray]:
    """Median radius ``(K,)`` and half extents ``(K, 2)`` over each object's reliable frames (``nan`` if none)."""
    ok = tracks.reliable()
    radius = np.where(ok, tracks.radius, np.nan)
    half = np.where(ok[..., None], tracks.half_extent, np.nan)
    with np.errstate(all="ignore"), quiet_nans():
        r = np.nanmedian(radius, axis=0)
        h = np.nanmedian(half, axis=0)
    size = np.array(
        [r[k] if o.shape == "disk" else np.nanmax(h[k]) if np.isfinite(h[k]).any() else np.nan
         for k, o in enumerate(spec.objects)]
    )  # fmt: skip
    return size, h


@contextlib.contextmanager
def quiet_nans() -> Iterator[None]:
    """Silence numpy's all-nan RuntimeWarnings (an absent object is an expected case here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _box_sd(p: np.ndarray, c: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Signed distance from points ``p (..., 2)`` to axis-aligned boxes centred at ``c`` (negative inside)."""
    q = np.abs(p - c) - half
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(-1), 0.0)
    return outside + inside


def step_lengths(tracks: Tracks) -> np.ndarray:
    """``(T-1, K)`` displacement between consecutive frames, units (``nan`` unless both frames reliable)."""
    ok = tracks.reliable()
    d = np.linalg.norm(np.diff(tracks.pos, axis=0), axis=-1)
    return np.where(ok[1:] & ok[:-1], d, np.nan)


def contacts(tracks: Tracks, spec: WorldSpec) -> Contacts:
    """Gaps to walls and between objects, and the intervals where a contact was possible."""
    t, k = tracks.pos.shape[:2]
    size, half = robust_sizes(tracks, spec)
    w, h = spec.world_size
    x, y = tracks.pos[..., 0], tracks.pos[..., 1]
    # edge-to-wall distance: disks by radius, boxes by half extent, rotated squares by circumradius
    ext = np.stack([size, size], -1)
    for i, o in enumerate(spec.objects):
        if o.shape == "box":
            ext[i] = half[i]
        elif o.shape == "square":
            ext[i] = size[i] * math.sqrt(2)
    gaps = {
        "left": x - ext[:, 0],
        "right": w - x - ext[:, 0],
        "bottom": y - ext[:, 1],
        "top": h - y - ext[:, 1],
    }
    ok = tracks.reliable()
    both = ok[1:] & ok[:-1]  # (t-1, k)
    step = np.where(both[..., None], np.abs(np.diff(tracks.pos, axis=0)), np.nan)  # (t-1, k, 2)
    wall_gap = np.full((t, k), np.inf)
    sides = np.zeros((t - 1, k, len(WALLS)), bool)
    for n, name in enumerate(WALLS):
        if name not in spec.walls:
            continue
        g = np.where(tracks.visible, gaps[name], np.inf)
        wall_gap = np.fmin(wall_gap, g)
        # only motion towards the wall can close the gap: steps along its normal
        reach = _reach(step[..., 0 if name in ("left", "right") else 1])
        sides[..., n] = g[:-1] + g[1:] <= reach
    wall = sides.any(-1)

    pair_gap = np.full((t, k, k), np.inf)
    for i, oi in enumerate(spec.objects):
        for j, oj in enumerate(spec.objects):
            if i == j or not (oi.solid and oj.solid):
                continue
            if oi.shape == "box" and oj.shape == "box":
                continue
            if oj.shape == "box":
                g = _box_sd(tracks.pos[:, i], tracks.pos[:, j], half[j]) - size[i]
            elif oi.shape == "box":
                g = _box_sd(tracks.pos[:, j], tracks.pos[:, i], half[i]) - size[j]
            else:
                ri = size[i] * (math.sqrt(2) if oi.shape == "square" else 1.0)
                rj = size[j] * (math.sqrt(2) if oj.shape == "square" else 1.0)
                g = np.linalg.norm(tracks.pos[:, i] - tracks.pos[:, j], axis=-1) - ri - rj
            pair_gap[:, i, j] = np.where(np.isnan(g), np.inf, g)
    rel = tracks.pos[:, :, None] - tracks.pos[:, None, :]  # (t, k, k, 2)
    rel_step = np.linalg.norm(np.diff(rel, axis=0), axis=-1)  # (t-1, k, k)
    rel_step = np.where(both[:, :, None] & both[:, None, :], rel_step, np.nan)
    # a contact inside the interval means the gap closed and reopened: g(t) + g(t+1) <= the path length
    near_pair = pair_gap[:-1] + pair_gap[1:]  # (t-1, k, k)
    pair = np.isfinite(near_pair) & (near_pair <= _reach(rel_step))
    free = both & ~wall & ~pair.any(-1)
    return Contacts(size, half, wall_gap, pair_gap, wall, sides, pair, free)


def _reach(step: np.ndarray) -> np.ndarray:
    """How far a gap can close during each interval, from the steps ``(T-1, ...)`` around it.

    A contact in interval ``t`` is possible only if ``g(t) + g(t+1)`` is within reach: 1.5 times the
    longest of the four neighbouring steps (speed changes only at contacts, so one of them shows the
    speed before or after; the step itself is left out so that a jump in position does not count as
    speed), plus a small margin. Unknown motion (no neighbours) means anything is possible.
    """
    pad = np.pad(step, [(2, 2)] + [(0, 0)] * (step.ndim - 1), constant_values=np.nan)
    around = np.stack([pad[:-4], pad[1:-3], pad[3:-1], pad[4:]])
    with quiet_nans():
        reach = 1.5 * np.nanmax(around, axis=0) + _MARGIN
    return np.where(np.isnan(reach), np.inf, reach)


def free_windows(free: np.ndarray, length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Start frames and objects of every ``length``-frame window whose intervals are all free flight.

    Returns:
        ``(starts, objects)``, two int arrays of the same length.
    """
    n = free.shape[0] - (length - 1) + 1
    if n <= 0:
        return np.zeros(0, int), np.zeros(0, int)
    bad = np.cumsum(np.pad(~free, ((1, 0), (0, 0))), axis=0)  # (t, k) non-free intervals before frame t
    ok = (bad[length - 1 :] - bad[:n]) == 0  # (n, k)
    starts, objects = np.nonzero(ok)
    return starts, objects


def agent_contact(prev: np.ndarray, new: np.ndarray, spec: WorldSpec, max_gap: float = 0.5) -> np.ndarray:
    """Is an object at the agent's body in either of two consecutive frames? ``bool (n,)``.

    ``prev, new``: ``uint8 (n, H, W, 3)`` frames of ``n`` episodes. True where the tracked edge-to-edge
    gap between the agent object (``ObjectSpec.agent``, Balls' paddle) and any other solid object is
    at most ``max_gap`` world units in ``prev`` or ``new`` (:func:`agent_gap`); False where it is
    wider or where the tracker cannot find the agent or any other object (a dissolved frame). A
    contact reward needs this (Balls pays when a ball starts touching the paddle): on 16 held-out
    real Balls episodes every rewarded step has a ball within 0.5 units of the paddle, and 5 % of all
    steps do (``simworld eval-model``; docs/results.md, session 17).

    Raises:
        ValueError: for a world without an agent object, or frames that are not two equal batches.
    """
    return agent_gap(prev, new, spec) <= max_gap


def agent_gap(prev: np.ndarray, new: np.ndarray, spec: WorldSpec) -> np.ndarray:
    """The smallest tracked gap between the agent's body and another solid object over two
    consecutive frames, world units, ``float (n,)``; ``inf`` where the tracker finds the agent or
    every other object in neither frame (a dissolved frame). Two frames are too few for
    :func:`contacts`' reach test.

    Raises:
        ValueError: for a world without an agent object, or frames that are not two equal batches.
    """
    from simworld.probes.tracker import track

    agents = [i for i, o in enumerate(spec.objects) if o.agent]
    if not agents:
        raise ValueError(f"{spec.world_id or 'this world'} has no agent object to touch")
    a = agents[0]
    prev, new = np.asarray(prev), np.asarray(new)
    if prev.shape != new.shape or prev.ndim != 4:
        raise ValueError(f"need two (n, H, W, 3) batches of the same shape, got {prev.shape} and {new.shape}")
    n = len(new)
    tr = track(np.stack([prev, new], axis=1).reshape(2 * n, *new.shape[1:]), spec)  # prev_i, new_i, ...
    out = np.full(n, np.inf)
    with quiet_nans():
        for i in range(n):
            g = contacts(tr[2 * i : 2 * i + 2], spec).pair_gap  # (2, k, k)
            out[i] = float(np.min(np.minimum(g[:, a, :], g[:, :, a])))
    return out


def floor_contact(frames: np.ndarray, spec: WorldSpec, max_gap: float = 0.5) -> np.ndarray:
    """Is a ballistic object within ``max_gap`` world units of the floor in each frame? ``bool (n,)``.

    ``frames``: ``uint8 (n, H, W, 3)``. The gap is from the object's lowest point (centre height minus
    its radius, or its half height for boxes) to the bottom edge; an object cut by the bottom edge
    counts as touching. False where no ballistic object is found (a dissolved frame). A world that
    ends its episodes when a ball reaches the floor (Balls) needs this at every termination: on
    held-out real Balls episodes every terminal frame shows one (``simworld eval-model``).

    Raises:
        ValueError: for a world without a floor (a ``"bottom"`` wall) or ballistic objects.
    """
    from simworld.probes.tracker import track

    ballistic = [i for i, o in enumerate(spec.objects) if o.ballistic]
    if "bottom" not in spec.walls or not ballistic:
        raise ValueError(f"{spec.world_id or 'this world'} has no floor with ballistic objects on it")
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"need a (n, H, W, 3) batch of frames, got {frames.shape}")
    tr = track(frames, spec)
    y = tr.pos[:, ballistic, 1]
    low = np.where(
        np.array([spec.objects[i].shape == "box" for i in ballistic]),
        tr.half_extent[:, ballistic, 1],
        tr.radius[:, ballistic],
    )
    with np.errstate(invalid="ignore"):
        gap = np.where(tr.clipped[:, ballistic], 0.0, y - low)
        near = tr.visible[:, ballistic] & (gap <= max_gap)
    return near.any(axis=1)


def floor_steps(frames: np.ndarray, spec: WorldSpec, max_gap: float = 0.5) -> np.ndarray:
    """May each step of an episode end at the floor? ``bool (T-1,)`` for frames ``(T, H, W, 3)``:
    :func:`floor_contact` in the frame before or the one after, as ``DreamVectorEnv`` checks a step."""
    near = floor_contact(frames, spec, max_gap)
    return near[:-1] | near[1:]


def floor_spec(world_id: str, world_params: dict) -> WorldSpec:
    """The spec of a world whose episodes can end at its floor (for :func:`floor_contact`).

    Raises:
        ValueError: naming the world, if the probes cannot track it or it has no floor with
            falling objects on it.
    """
    try:
        spec = WorldSpec.from_world(world_id, world_params)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"termination_floor_gap needs a world the probes can track; {world_id}: {e}"
        ) from None
    if "bottom" not in spec.walls or not any(o.ballistic for o in spec.objects):
        raise ValueError(
            f"termination_floor_gap needs a world with a floor and falling objects, not {world_id}"
        )
    return spec
