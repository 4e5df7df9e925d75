"""Each violation generator produces what it claims, and the probes notice it."""

import numpy as np
import pytest

from simworld.probes import violations as V
from simworld.probes.suite import score_video
from simworld.probes.world import WorldSpec


@pytest.fixture(scope="module")
def env():
    return V.make_balls()


@pytest.fixture(scope="module")
def spec(env):
    return WorldSpec.from_env(env)


def _pixels(frame, color):
    return int((np.abs(frame.astype(int) - np.array(color, int)).max(-1) < 4).sum())


def _rng():
    return np.random.default_rng(0)


def test_teleport_jumps_by_the_magnitude(balls_clip, env, spec):
    p = V.teleport(balls_clip, env, _rng(), 1.0)
    k, t0 = p.ball, p.onset
    np.testing.assert_array_equal(p.frames[:t0], balls_clip.frames[:t0])
    jump = np.linalg.norm(p.states[t0]["ball_pos"][k] - balls_clip.states[t0]["ball_pos"][k])
    assert jump == pytest.approx(1.0)
    assert (
        score_video(p.frames, spec)["continuity"] > score_video(balls_clip.frames, spec)["continuity"] + 0.2
    )


def test_velocity_jump_kicks_a_ball_in_free_flight(balls_clip, env):
    p = V.velocity_jump(balls_clip, env, _rng(), 2.0)
    k, t = p.ball, p.onset - 1  # the kick acts between frame onset-1 and onset
    dv = p.states[t]["ball_vel"][k] - balls_clip.states[t]["ball_vel"][k]
    assert np.linalg.norm(dv) == pytest.approx(2.0)
    np.testing.assert_array_equal(p.frames[: t + 1], balls_clip.frames[: t + 1])


def test_vanish_and_duplicate_change_what_is_drawn(balls_clip, env, spec):
    gone = V.vanish(balls_clip, env, _rng(), 3)
    col = spec.objects[gone.ball].color
    span = range(gone.onset, gone.onset + 3)
    assert all(_pixels(gone.frames[t], col) == 0 for t in span)
    assert _pixels(gone.frames[gone.onset + 3], col) > 0
    assert score_video(gone.frames, spec)["permanence"] < 1.0

    dup = V.duplicate(balls_clip, env, _rng(), 3)
    col = spec.objects[dup.ball].color
    t = dup.onset
    assert _pixels(dup.frames[t], col) > 1.8 * _pixels(balls_clip.frames[t], col)
    assert dup.info["copy_pos"].shape == (3, 2)


def test_radius_and_colour_swap(balls_clip, env, spec):
    p = V.radius(balls_clip, env, _rng(), 1.3)
    k, t = p.ball, p.onset
    ratio = p.states[t]["ball_radius"][k] / balls_clip.states[t]["ball_radius"][k]
    assert ratio == pytest.approx(p.magnitude) and p.magnitude in (pytest.approx(1.3), pytest.approx(1 / 1.3))
    assert score_video(p.frames, spec)["size_change"] > 0.2

    s = V.colour_swap(balls_clip, env, _rng())
    j, k, t = s.info["new_slot"], s.ball, s.onset
    np.testing.assert_array_equal(s.states[t]["ball_pos"][j], balls_clip.states[t]["ball_pos"][k])
    assert not np.array_equal(s.frames[t], balls_clip.frames[t])


def test_gravity_and_restitution_resimulate(balls_clip, env):
    g = V.gravity(balls_clip, env, _rng(), 0.5)
    assert all(float(st["gravity"]) == 2.5 for st in g.states)
    np.testing.assert_array_equal(g.frames[0], balls_clip.frames[0])

    def energy(states):
        return sum(
            float((s["ball_mass"] * (0.5 * (s["ball_vel"] ** 2).sum(1) + 5.0 * s["ball_pos"][:, 1])).sum())
            for s in states[-1:]
        )

    lossy = V.restitution(balls_clip, env, _rng(), 0.5)
    assert energy(lossy.states) < 0.9 * energy(balls_clip.states[:1])


def test_wall_pass_leaves_the_world(balls_clip, env, spec):
    p = V.wall_pass(balls_clip, env, _rng())
    w, h = balls_clip.states[0]["world_size"]
    x = np.array([s["ball_pos"][p.ball] for s in p.states[p.onset :]])
    r = balls_clip.states[0]["ball_radius"][p.ball]
    outside = (x[:, 0] < r) | (x[:, 0] > w - r) | (x[:, 1] > h - r) | (x[:, 1] < r)
    assert outside.any()
    assert score_video(p.frames, spec)["wall_penetration"] > 0.2


def test_jitter_is_a_possible_twin(balls_clip, env, spec):
    p = V.jitter(balls_clip, env, _rng(), 1e-3)
    d = np.abs(p.states[0]["ball_pos"] - balls_clip.states[0]["ball_pos"]).max()
    assert 0 < d < 5e-3
    s = score_video(p.frames, spec)
    assert s["permanence"] == 1.0 and s["gravity_error"] < 0.02


def test_registry_documents_every_violation():
    assert set(V.MATRIX_VIOLATIONS) >= {
        "teleport", "vanish", "duplicate", "radius", "colour_swap", "gravity_x0.5", "gravity_x2",
        "restitution", "wall_pass", "velocity_jump",
    }  # fmt: skip
    for v in V.VIOLATIONS.values():
        assert v.unit and callable(v.make)
