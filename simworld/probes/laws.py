"""Physical laws checked on one video, with no ground truth: each probe is a named function of tracks.

Conventions: positions in world units, time in seconds (``dt = 1 / fps``), gravity ``g`` pulls towards
-y. A probe returns a float where larger means *less* physical unless its docstring says otherwise
(``permanence``: 1 is perfect), and ``nan`` when the video holds no evidence (e.g. no collision to
test conservation on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simworld.probes.contacts import WINDOW, Contacts, contacts, free_windows, quiet_nans, step_lengths
from simworld.probes.tracker import Tracks
from simworld.probes.world import WorldSpec


@dataclass
class FlightFits:
    """Quadratic fits ``p(tau) = p0 + v tau + a tau^2 / 2`` on every free-flight window.

    Attributes:
        start: ``(n,)`` first frame of each window; ``obj``: ``(n,)`` the object it belongs to.
        p0, v, a: ``(n, 2)`` position, velocity and acceleration at the window's centre frame.
        residual: ``(n,)`` RMS residual of the inertial model (x linear; y quadratic when there is
            gravity), units.
    """

    start: np.ndarray
    obj: np.ndarray
    p0: np.ndarray
    v: np.ndarray
    a: np.ndarray
    residual: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return self.start + WINDOW // 2


def fit_free_flight(tracks: Tracks, spec: WorldSpec, c: Contacts | None = None) -> FlightFits:
    """Least-squares fits of every free-flight window of every ballistic object."""
    c = contacts(tracks, spec) if c is None else c
    ballistic = np.array([o.ballistic for o in spec.objects])
    starts, objs = free_windows(c.free)
    keep = ballistic[objs]
    starts, objs = starts[keep], objs[keep]
    tau = (np.arange(WINDOW) - WINDOW // 2) / spec.fps  # (L,) seconds from the centre frame
    frames = starts[:, None] + np.arange(WINDOW)  # (n, L)
    p = tracks.pos[frames, objs[:, None]]  # (n, L, 2)
    quad = np.stack([np.ones_like(tau), tau, 0.5 * tau**2], -1)  # (L, 3)
    coef = np.einsum("fl,nlc->nfc", np.linalg.pinv(quad), p)  # (n, 3, 2): p0, v, a
    lin = quad[:, :2]
    inertial = [lin, quad if spec.gravity != 0 else lin]  # per axis: the law's degrees of freedom
    res = np.stack([p[..., ax] - p[..., ax] @ (m @ np.linalg.pinv(m)).T for ax, m in enumerate(inertial)], -1)
    rms = np.sqrt((res**2).mean(axis=(1, 2))) if len(starts) else np.zeros(0)
    return FlightFits(starts, objs, coef[:, 0], coef[:, 1], coef[:, 2], rms)


def inertia(fits: FlightFits) -> float:
    """Largest departure from inertial motion in free flight, world units.

    ``max_w sqrt(mean_i |p_i - fit_w(t_i)|^2)`` over every ``WINDOW``-frame free-flight window ``w``, where
    the fit is linear in x and quadratic in y (uniform gravity; linear when ``g = 0``). A ball that
    obeys Newton's first law between contacts gives the tracker's noise (~0.002 units on 64x64
    frames); a kick mid-flight, a teleport or jitter gives more.
    """
    return float(fits.residual.max()) if len(fits.residual) else math.nan


def gravity_fit(fits: FlightFits) -> float:
    """Gravitational acceleration read off free flight, units/s^2 (positive = down).

    ``g_fit = -median_w a_y(w)`` over the quadratic fits of all free-flight windows.
    """
    return float(-np.median(fits.a[:, 1])) if len(fits.a) else math.nan


def gravity_error(fits: FlightFits, spec: WorldSpec) -> float:
    """Relative error of the acceleration in free flight against the world's gravity (dimensionless).

    ``|median_w a(w) - (0, -g)| / g`` with ``a`` the fitted acceleration vector of each free-flight
    window (median per axis); for ``g = 0`` the error is in units/s^2.
    """
    if not len(fits.a):
        return math.nan
    a = np.median(fits.a, axis=0)
    return float(np.linalg.norm(a - np.array([0.0, -spec.gravity])) / (spec.gravity or 1.0))


@dataclass
class Conservation:
    """Largest relative changes across collision events (``nan`` when there was none to test)."""

    energy: float
    momentum: float
    events: int


def conservation(tracks: Tracks, spec: WorldSpec, fits: FlightFits, c: Contacts) -> Conservation:
    """Conservation of energy and momentum across collisions, with mass proportional to area.

    An *event* is the gap between two free-flight segments of a ballistic object. Each side is read
    from the nearest window's fit: velocity ``v`` and acceleration ``a`` (a uniform force field, so
    ``e = |v|^2 / 2 - a_bar . p`` is conserved along each free flight, with ``a_bar`` the mean of the
    two sides' fits). Masses are ``m = pi r^2`` with the tracked radius (density 1, as in Balls).

    - A bounce off walls only (or off the top of the paddle, which moves sideways and so does no work
      on a frictionless ball): energy ``m e`` must be conserved.
    - A collision of two ballistic objects (no wall involved): ``sum m e`` and the momentum
      ``sum m v(t_c)`` (velocities carried to a common time with each side's fit) must be conserved.
    - A break in free flight with no contact at all: energy and momentum of the object.

    Returns:
        ``energy = max |Delta E| / (KE_before + KE_floor)`` and ``momentum = max |Delta P| / sum m |v|``
        (dimensionless), with ``KE_floor = m (0.05 v_max)^2 / 2`` so slow objects do not divide by ~0.
        Events involving objects that are not ballistic and move (a paddle hit on its side), or
        several walls and objects at once, are skipped.
    """
    mass = math.pi * c.size**2
    floor_v = 0.05 * (spec.max_speed if math.isfinite(spec.max_speed) else 10.0)
    ballistic = np.array([o.ballistic for o in spec.objects])
    by_obj: dict[int, list[int]] = {}
    for n, k in enumerate(fits.obj):
        by_obj.setdefault(int(k), []).append(n)

    def involved(k: int, lo: int, hi: int) -> tuple[bool, list[int], bool, bool]:
        """(a wall?, ballistic partners, every box partner hit on its top face?, any box partner?)"""
        partners = np.flatnonzero(c.pair[lo:hi, k].any(0))
        balls = [int(j) for j in partners if ballistic[j]]
        boxes = [int(j) for j in partners if not ballistic[j]]
        tops = all(_top_hit(tracks, c, k, j, lo, hi) for j in boxes)
        return bool(c.wall[lo:hi, k].any()), balls, tops, bool(boxes)

    energy, momentum, events = [], [], 0
    done: set[tuple[int, int, int]] = set()
    for k, idx in by_obj.items():
        idx = sorted(idx, key=lambda n: fits.start[n])
        for before, after in zip(idx[:-1], idx[1:], strict=False):
            if fits.start[after] - fits.start[before] == 1 or (k, before, after) in done:
                continue  # same free-flight segment, or already tested as another object's partner
            lo, hi = fits.start[before] + WINDOW - 1, fits.start[after]  # frames of the event
            wall, balls, tops, box = involved(k, lo, hi)
            if not tops or len(balls) > 1 or (balls and wall):
                continue
            group = [(k, before, after)]
            if balls:
                j = balls[0]
                sides = _sides(fits, j, lo, hi)
                if sides is None:
                    continue
                wall_j, balls_j, tops_j, box_j = involved(
                    j, fits.start[sides[0]] + WINDOW - 1, fits.start[sides[1]]
                )
                if wall_j or not tops_j or set(balls_j) - {k}:
                    continue
                box = box or box_j
                done.add((j, *sides))
                group.append((j, *sides))
            events += 1
            t_c = 0.5 * (lo + hi) / spec.fps
            e_sum, ke, p_sum, p_norm = 0.0, 0.0, np.zeros(2), 0.0
            for obj, b, a in group:
                acc = 0.5 * (fits.a[b] + fits.a[a])
                m = mass[obj]
                e_b = m * (0.5 * fits.v[b] @ fits.v[b] - acc @ fits.p0[b])
                e_a = m * (0.5 * fits.v[a] @ fits.v[a] - acc @ fits.p0[a])
                e_sum += e_a - e_b
                ke += m * 0.5 * (fits.v[b] @ fits.v[b] + floor_v**2)
                v_b = fits.v[b] + fits.a[b] * (t_c - fits.centre[b] / spec.fps)
                v_a = fits.v[a] + fits.a[a] * (t_c - fits.centre[a] / spec.fps)
                p_sum += m * (v_a - v_b)
                p_norm += m * (np.linalg.norm(v_b) + floor_v)
            energy.append(abs(e_sum) / ke)
            if not wall and not box:  # walls and the paddle take momentum; only free pairs keep it
                momentum.append(float(np.linalg.norm(p_sum)) / p_norm)
    return Conservation(
        energy=max(energy) if energy else math.nan,
        momentum=max(momentum) if momentum else math.nan,
        events=events,
    )


def _sides(fits: FlightFits, k: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The fits of object ``k`` that end last before frame ``lo`` and start first after ``hi``."""
    mine = np.flatnonzero(fits.obj == k)
    ends = fits.start[mine] + WINDOW - 1
    b = mine[ends <= lo]
    a = mine[fits.start[mine] >= hi]
    if not len(b) or not len(a):
        return None
    return int(b[np.argmax(fits.start[b])]), int(a[np.argmin(fits.start[a])])


def _top_hit(tracks: Tracks, c: Contacts, k: int, j: int, lo: int, hi: int) -> bool:
    """Did disk ``k`` meet box ``j`` on its top face during frames ``lo..hi`` (not a side or a corner)?

    Its lowest point stays above the face, and where it comes lowest its centre is over the face. A box
    that moves sideways (the paddle) does no work on a frictionless ball through its top face, but can
    through a side or a corner.
    """
    seg = slice(lo, hi + 1)
    y, top = tracks.pos[seg, k, 1], tracks.pos[seg, j, 1] + c.half[j, 1]
    if not np.isfinite(y).any():
        return False
    low = int(np.nanargmin(y))
    over = abs(tracks.pos[lo + low, k, 0] - tracks.pos[lo + low, j, 0]) <= c.half[j, 0]
    with quiet_nans():
        return bool(over and np.all(y - c.size[k] >= top - 0.1))


def inertia_local(tracks: Tracks, spec: WorldSpec, c: Contacts) -> float:
    """Largest departure from inertial motion over any three free-flight frames, world units.

    Between contacts every object feels the same uniform field, so the second difference of position
    ``p(t+1) - 2 p(t) + p(t-1)`` equals ``a dt^2`` with ``a`` the video's free-flight acceleration
    (the median over all free triples, so this probe does not judge gravity's strength). The probe is
    ``max_t |p(t+1) - 2 p(t) + p(t-1) - a dt^2| / 2``: the residual of the middle frame from the
    parabola through its neighbours. It needs only two free intervals, so it sees violations between
    closely spaced contacts that :func:`inertia`'s longer windows miss, at ~3x its noise.
    """
    ballistic = np.array([o.ballistic for o in spec.objects])
    free = c.free[:-1] & c.free[1:] & ballistic  # (t-2, k): triple centred on frame t+1
    if not free.any():
        return math.nan
    d2 = tracks.pos[2:] - 2 * tracks.pos[1:-1] + tracks.pos[:-2]  # (t-2, k, 2)
    a_dt2 = np.median(d2[free], axis=0)
    return float(0.5 * np.linalg.norm(d2[free] - a_dt2, axis=-1).max())


def continuity(tracks: Tracks, spec: WorldSpec) -> float:
    """Largest per-step displacement beyond the physically possible one, world units.

    Between contacts an object's speed changes only by gravity, and a contact can shorten the chord
    of a step (the path folds) but never lengthen it, so a step can be no longer than the steps around
    it: ``possible(t) = max(d(t-2), d(t-1), d(t+1), d(t+2)) + 2 g dt^2`` (two neighbours on each side,
    because a neighbouring step may itself be a folded chord). An agent moves as commanded, at most
    ``action_speed dt`` per step. Nothing moves faster than ``v_max = spec.max_speed``. The probe is
    ``max_{t,k} [d_k(t) - min(possible_k(t), v_max dt)]`` over steps where the object is reliably
    tracked in both frames: <= 0 for real motion, about the jump for a teleport.
    """
    d = step_lengths(tracks)  # (t-1, k)
    if not np.isfinite(d).any():
        return math.nan
    pad = np.pad(d, ((2, 2), (0, 0)), constant_values=np.nan)
    with quiet_nans():
        around = np.nanmax(np.stack([pad[:-4], pad[1:-3], pad[3:-1], pad[4:]]), axis=0)
    possible = np.where(np.isnan(around), np.inf, around + 2 * spec.gravity * spec.dt**2)
    agents = np.array([o.agent for o in spec.objects])
    if spec.action_speed is not None:
        possible[:, agents] = 1.05 * spec.action_speed * spec.dt + 0.02
    if math.isfinite(spec.max_speed):
        possible = np.minimum(possible, spec.max_speed * spec.dt)
    excess = d - possible
    return float(np.nanmax(excess)) if np.isfinite(excess).any() else math.nan


def size_constancy(tracks: Tracks, spec: WorldSpec, c: Contacts) -> tuple[float, float]:
    """Largest change of size and of shape of any object (dimensionless).

    Size: ``max_t |r(t) - median r| / median r`` with ``r = sqrt(A / pi)`` the equivalent radius.
    Shape: ``max_t |kappa(t) - median kappa| / median kappa`` with ``kappa`` the compactness (polar
    moment over that of a disk of the same area; rotation-invariant, 1 for a disk, ~3.4 for the paddle). Only frames where the object is
    reliably tracked and not touching another object (which could hide part of it) count.
    """
    ok = tracks.reliable() & (np.min(c.pair_gap, axis=-1) > 0.05)
    r = np.where(ok, tracks.radius, np.nan)
    kappa = np.where(ok, tracks.compactness, np.nan)
    with quiet_nans():
        size = np.nanmax(np.abs(r - np.nanmedian(r, 0)) / np.nanmedian(r, 0))
        shape = np.nanmax(np.abs(kappa / np.nanmedian(kappa, 0) - 1.0))
    return float(size), float(shape)


def permanence(tracks: Tracks) -> float:
    """Object permanence: the fraction of (frame, colour) pairs with as many pieces as in the first frame.

    ``mean_{t,k} [n_k(t) == n_k(0)]`` with ``n_k`` the number of separate blobs of colour ``k``; 1 means
    nothing vanished, appeared, split or changed colour.
    """
    return float((tracks.count == tracks.count[:1]).mean())


_H = np.linspace(-1.0, 1.0, 401)
_VISIBLE = (np.arccos(-_H) + _H * np.sqrt(1.0 - _H**2)) / math.pi  # disk fraction inside a chord at h r


def solidity(tracks: Tracks, spec: WorldSpec, c: Contacts) -> tuple[float, float]:
    """Deepest overlap between solid objects and deepest reach past a solid wall, world units.

    Overlap: ``max_t max(0, -gap)`` with ``gap`` the edge-to-edge distance (disk-disk
    ``|p_i - p_j| - r_i - r_j``, disk-box signed distance minus radius). Wall: for a disk in view,
    ``max(0, r - d)`` with ``d`` its centre's distance to the wall; for a disk cut by the image border
    (partly out of view), the depth ``r (1 - h)`` where ``h`` solves ``A_visible / (pi r^2) =
    (acos(-h) + h sqrt(1 - h^2)) / pi`` (the visible fraction of a disk whose centre is ``h r`` inside).
    """
    overlap = np.where(np.isfinite(c.pair_gap), -c.pair_gap, 0.0)
    overlap = float(np.nanmax(overlap, initial=0.0))
    disks = np.array([o.shape == "disk" for o in spec.objects])
    wall = 0.0
    vis = tracks.visible & disks & np.isfinite(c.size)
    if vis.any():
        depth_in_view = np.where(vis & ~tracks.clipped, -c.wall_gap, 0.0)
        frac = np.clip(tracks.area / (math.pi * c.size**2), 0.0, 1.0)
        h = np.interp(frac, _VISIBLE, _H)
        depth_cut = np.where(vis & tracks.clipped, c.size * (1.0 - h), 0.0)
        wall = float(max(np.nanmax(depth_in_view), np.nanmax(depth_cut), 0.0))
    return max(overlap, 0.0), wall
