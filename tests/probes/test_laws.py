"""Probe formulas on hand-made trajectories with known answers."""

import math

import numpy as np

from simworld.probes import laws
from simworld.probes.contacts import contacts
from simworld.probes.suite import law_scores, score_video
from simworld.probes.tracker import track
from tests.probes.conftest import ballistic, disk_spec, render


def _fits(frames, spec):
    tr = track(frames, spec)
    c = contacts(tr, spec)
    return tr, c, laws.fit_free_flight(tr, spec, c)


def test_free_fall_gives_the_worlds_gravity():
    spec = disk_spec(1, gravity=5.0)
    pos = ballistic([3.0, 8.5], [1.0, 1.0], 5.0, 24)[:, None]  # stays clear of the walls
    tr, c, fits = _fits(render(spec, pos), spec)
    assert c.free.all()
    assert abs(laws.gravity_fit(fits) - 5.0) < 0.1  # within 2 %
    assert laws.gravity_error(fits, spec) < 0.02
    assert laws.inertia(fits) < 0.005 and laws.inertia_local(tr, spec, c) < 0.01
    # the same video judged as a world with g = 2.5 is off by 100 %
    assert abs(laws.gravity_error(fits, disk_spec(1, gravity=2.5)) - 1.0) < 0.05


def test_kick_mid_flight_breaks_inertia():
    spec = disk_spec(1, gravity=0.0)
    pos = ballistic([2.0, 5.0], [2.0, 0.0], 0.0, 24)
    kicked = pos.copy()
    kicked[12:] += np.outer(np.arange(12) / 15.0, [0.0, 1.5])  # +1.5 units/s upwards from frame 12
    clean = law_scores(track(render(spec, pos[:, None]), spec), spec)
    bad = law_scores(track(render(spec, kicked[:, None]), spec), spec)
    assert clean["inertia"] < 0.005 and clean["inertia_local"] < 0.01
    assert bad["inertia"] > 0.02 and bad["inertia_local"] > 0.03


def test_teleport_raises_continuity():
    spec = disk_spec(1, gravity=0.0)
    pos = ballistic([2.0, 5.0], [3.0, 0.0], 0.0, 24)
    jumped = pos.copy()
    jumped[12:, 1] += 1.5
    clean = laws.continuity(track(render(spec, pos[:, None]), spec), spec)
    bad = laws.continuity(track(render(spec, jumped[:, None]), spec), spec)
    step = 3.0 / 15
    assert clean < 0.02
    # the jump step is |(0.2, 1.5)| long where 0.2 was possible
    assert abs(bad - (math.hypot(step, 1.5) - step)) < 0.03


def test_vanish_lowers_permanence():
    spec = disk_spec(1, gravity=0.0)
    pos = ballistic([2.0, 5.0], [3.0, 0.0], 0.0, 20)[:, None].copy()
    assert laws.permanence(track(render(spec, pos), spec)) == 1.0
    pos[8:13] = np.nan  # gone for 5 of 20 frames
    assert laws.permanence(track(render(spec, pos), spec)) == 0.75


def test_size_and_shape_constancy():
    spec = disk_spec(1, gravity=0.0)
    pos = ballistic([2.0, 5.0], [3.0, 0.0], 0.0, 20)[:, None]
    radius = np.full((20, 1), 0.5)
    radius[12:] = 0.6
    tr = track(render(spec, pos, radius), spec)
    size, shape = laws.size_constancy(tr, spec, contacts(tr, spec))
    assert abs(size - 0.2) < 0.02  # the median radius is 0.5: 0.6 is a 20 % change
    assert shape < 0.05  # still a disk


def test_solidity_measures_overlap_and_wall_depth():
    spec = disk_spec(2, gravity=0.0)
    apart = [[[3.0, 7.0], [7.0, 7.0]]] * 5
    pos = np.array(apart + [[[4.0, 5.0], [5.0, 5.0]]])  # last frame: the disks overlap by 0.2
    tr = track(render(spec, pos, 0.6), spec)
    overlap, wall = laws.solidity(tr, spec, contacts(tr, spec))
    # green is drawn over red, whose visible centroid moves away: occlusion hides part of the overlap
    assert 0.1 < overlap <= 0.22 and wall == 0.0
    pos = np.array(apart + [[[3.0, 7.0], [9.6, 7.0]]])  # last frame: green 0.2 past the right wall
    tr = track(render(spec, pos, 0.6), spec)
    overlap, wall = laws.solidity(tr, spec, contacts(tr, spec))
    assert tr.clipped[-1, 1] and overlap == 0.0
    assert abs(wall - 0.2) < 0.04


def _bounce_path(e: float, frames: int = 30) -> np.ndarray:
    """A ball crossing at 3 units/s bounces off the left wall at frame 10.5 with restitution ``e``."""
    t = (np.arange(frames) - 10.5) / 15.0
    r = 0.6
    x = np.where(t < 0, r - 3.0 * t, r + 3.0 * e * t)
    return np.stack([x, np.full(frames, 5.0)], -1)[:, None]


def test_energy_is_conserved_in_an_elastic_bounce_and_not_otherwise():
    spec = disk_spec(1, gravity=0.0, max_speed=10.0)
    elastic = law_scores(track(render(spec, _bounce_path(1.0)), spec), spec)
    lossy = law_scores(track(render(spec, _bounce_path(0.5)), spec), spec)
    assert elastic["collisions"] == 1 and elastic["energy_change"] < 0.02
    # |dE| / (KE + KE_floor) = (9 - 2.25) / 2 / ((9 + 0.5^2) / 2), with the floor speed 0.05 v_max
    assert abs(lossy["energy_change"] - 6.75 / 9.25) < 0.03


def test_momentum_is_conserved_when_equal_balls_exchange_velocities():
    spec = disk_spec(2, gravity=0.0, max_speed=10.0)
    frames, t_c, r = 30, 14.5, 0.5
    t = (np.arange(frames) - t_c) / 15.0
    a = np.where(t < 0, 5.0 - 2 * r + 2.0 * t, 5.0 - 2 * r)  # moving ball stops at contact
    b = np.where(t < 0, 5.0, 5.0 + 2.0 * t)  # ball at rest takes its velocity
    pos = np.stack([np.stack([a, np.full(frames, 4.0)], -1), np.stack([b, np.full(frames, 4.0)], -1)], 1)
    good = law_scores(track(render(spec, pos, r), spec), spec)
    assert good["collisions"] == 1 and good["momentum_change"] < 0.03 and good["energy_change"] < 0.03
    stuck = pos.copy()
    stuck[t > 0, 1, 0] = 5.0 + 1.0 * t[t > 0]  # the struck ball leaves at half speed: momentum lost
    bad = law_scores(track(render(spec, stuck, r), spec), spec)
    assert bad["momentum_change"] > 0.3 and bad["energy_change"] > 0.5


def test_real_balls_clip_passes_every_law(balls_clip):
    from simworld.probes.violations import make_balls
    from simworld.probes.world import WorldSpec

    s = score_video(balls_clip.frames, WorldSpec.from_env(make_balls()))
    assert s["gravity_error"] < 0.02 and s["inertia"] < 0.005 and s["permanence"] == 1.0
    assert s["continuity"] < 0.1 and s["size_change"] < 0.03
