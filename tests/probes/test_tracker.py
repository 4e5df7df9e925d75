"""The colour tracker reads positions and sizes in world units, and marks what it cannot see."""

import time

import numpy as np
import pytest

from simworld.probes.tracker import Tracks, coverage, track
from simworld.probes.world import WorldSpec
from tests.probes.conftest import disk_spec, render


def test_real_balls_positions_and_radii(balls_clip):
    from simworld.probes.violations import make_balls

    spec = WorldSpec.from_env(make_balls())
    tr = track(balls_clip.frames, spec)
    true_pos = np.stack([s["ball_pos"] for s in balls_clip.states])  # (t, 3, 2)
    true_r = balls_clip.states[0]["ball_radius"]
    assert tr.names == ("red", "green", "blue", "paddle")
    assert np.abs(tr.pos[:, :3] - true_pos).max() < 0.02  # 0.13 px
    assert np.abs(np.median(tr.radius[:, :3], 0) / true_r - 1).max() < 0.02
    paddle = balls_clip.states[0]["paddle_pos"]
    assert np.abs(tr.pos[0, 3] - paddle).max() < 0.02
    np.testing.assert_allclose(np.median(tr.half_extent[:, 3], 0), [1.25, 0.2], atol=0.03)
    assert (tr.count == 1).all() and not tr.clipped.any()


def test_tracking_a_frame_takes_well_under_a_millisecond(balls_clip):
    from simworld.probes.violations import make_balls

    spec = WorldSpec.from_env(make_balls())
    frames = balls_clip.frames
    best = min(_timed(lambda: track(frames, spec)) for _ in range(3)) / len(frames)
    assert best < 1e-3, f"{best * 1e3:.2f} ms per 64x64 frame"


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_partly_out_of_view_is_marked_not_guessed():
    spec = disk_spec(1)
    frames = render(spec, [[[0.6, 5.0]], [[0.2, 5.0]], [[-0.3, 5.0]]], 0.6)  # tangent, cut, mostly out
    tr = track(frames, spec)
    assert tr.clipped[:, 0].tolist() == [False, True, True]
    assert tr.reliable()[:, 0].tolist() == [True, False, False]
    assert tr.pos[1, 0, 0] > 0.2  # the visible part's centroid, not an extrapolated centre
    assert tr.area[2, 0] < tr.area[1, 0] < tr.area[0, 0]


def test_counts_pieces_and_compactness():
    spec = disk_spec(1)
    one = render(spec, [[[5.0, 5.0]]])
    two = np.maximum(one, render(spec, [[[2.0, 7.0]]]))  # a second red disk elsewhere
    a, b = track(one, spec), track(two, spec)
    assert a.count[0, 0] == 1 and b.count[0, 0] == 2
    assert abs(a.compactness[0, 0] - 1) < 0.05 and b.compactness[0, 0] > 3
    assert abs(b.area[0, 0] / a.area[0, 0] - 2) < 0.02


def test_absent_object_is_nan_and_coverage_sums_to_area():
    spec = disk_spec(2)
    frames = render(spec, [[[5.0, 5.0], [np.nan, np.nan]]], [[0.6, 0.6]])
    tr = track(frames, spec)
    assert tr.visible[0].tolist() == [True, False] and np.isnan(tr.pos[0, 1]).all()
    cov = coverage(frames, spec)
    assert abs(cov[0, ..., 0].sum() / spec.scale**2 - np.pi * 0.36) < 0.02
    assert abs(tr.area[0, 0] - np.pi * 0.36) < 0.02


def test_slicing_and_concat_round_trip(balls_clip):
    from simworld.probes.violations import make_balls

    spec = WorldSpec.from_env(make_balls())
    tr = track(balls_clip.frames, spec)
    back = Tracks.concat([tr[:10], tr[10:]])
    np.testing.assert_array_equal(back.pos, tr.pos)
    assert len(tr[-5:]) == 5


def test_frames_of_the_wrong_size_are_refused():
    spec = disk_spec(1)
    with pytest.raises(ValueError, match=r"32x32 \(H x W\) but the world renders 64x64"):
        track(np.zeros((2, 32, 32, 3), np.uint8), spec)
    with pytest.raises(ValueError, match="uint8"):
        track(np.zeros((2, 64, 64, 3), np.float32), spec)
