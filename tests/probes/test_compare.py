"""Comparison probes against ground truth: known offsets give known errors."""

import numpy as np
import pytest

from simworld.probes import compare
from simworld.probes.tracker import track
from tests.probes.conftest import ballistic, disk_spec, render


def test_velocity_and_trajectory_errors():
    spec = disk_spec(1, gravity=0.0)
    truth = ballistic([2.0, 5.0], [2.0, 0.0], 0.0, 20)[:, None]
    faster = ballistic([2.0, 5.0], [2.5, 0.0], 0.0, 20)[:, None]
    shifted = truth + np.array([0.0, 0.3])
    a, b, c = (track(render(spec, p), spec) for p in (truth, faster, shifted))
    ve, per_t = compare.velocity_error(b, a)
    assert abs(ve - 0.5) < 0.02 and per_t.shape == (20,)
    te = compare.trajectory_error(c, a)
    assert abs(te["ade"] - 0.3) < 0.01 and abs(te["fde"] - 0.3) < 0.01 and te["miss"] == 0.0
    assert compare.velocity_error(a, a)[0] == 0.0


def test_motion_masks_and_physics_iq_scores():
    spec = disk_spec(1, gravity=0.0)
    a = render(spec, ballistic([2.0, 5.0], [3.0, 0.0], 0.0, 12)[:, None])
    same = compare.motion_scores(a, a)
    assert same == {"spatial_iou": 1.0, "spatiotemporal_iou": 1.0, "weighted_spatial_iou": 1.0, "mse": 0.0}
    still = np.repeat(a[:1], len(a), 0)  # nothing moves
    other = compare.motion_scores(still, a)
    assert other["spatial_iou"] == 0.0 and other["spatiotemporal_iou"] == 0.0 and other["mse"] > 0
    norm = compare.normalise_by_variance({"spatial_iou": 0.4, "mse": 0.02}, {"spatial_iou": 0.8, "mse": 0.01})
    assert norm == pytest.approx({"spatial_iou": 0.5, "mse": 0.5})


def test_fidelity_is_a_control():
    spec = disk_spec(1, gravity=0.0)
    a = render(spec, ballistic([2.0, 5.0], [3.0, 0.0], 0.0, 6)[:, None])
    f = compare.fidelity(a, a)
    assert f["psnr"] == 100.0 and f["ssim"] == pytest.approx(1.0)


def test_action_responsiveness_on_the_real_paddle():
    from simworld.probes.violations import make_balls
    from simworld.probes.world import WorldSpec

    env = make_balls(num_balls=1)
    spec = WorldSpec.from_env(env)
    branches, scripts = [], []
    for a in (0, 1, 2):
        obs, _ = env.reset(seed=0)
        frames = [obs] + [env.step(a)[0] for _ in range(6)]
        branches.append(np.stack(frames))
        scripts.append(np.full(6, a))
    real = compare.action_responsiveness(branches, scripts, spec)
    assert real["responsiveness"] == pytest.approx(1.0, abs=1e-3)
    assert real["speed_ratio"] == pytest.approx(1.0, abs=0.02) and real["still_drift"] < 0.01
    frozen = compare.action_responsiveness([branches[1]] * 3, scripts, spec)  # a model that ignores actions
    assert np.isnan(frozen["responsiveness"]) or frozen["responsiveness"] < 0.1
    with pytest.raises(ValueError, match="needs 6 actions"):
        compare.action_responsiveness([branches[0]], [scripts[0][:3]], spec)
