import json

import numpy as np
import pytest

from simworld.data.video import read_video
from simworld.rollout import Trajectory, rollout


def test_scripted_rollout_saves_and_loads(checkpoint, tmp_path):
    traj = rollout(checkpoint, [0, 1, 2, 2, 1], steps=5, seed=0)
    assert traj.frames.shape == (6, 64, 64, 3) and traj.actions.tolist() == [0, 1, 2, 2, 1]
    assert traj.rewards.shape == traj.terminated.shape == (5,)
    back = Trajectory.load(traj.save(tmp_path / "t.npz"))
    np.testing.assert_array_equal(back.frames, traj.frames)
    assert back.info["world_id"] == "simworld/Balls-v0"
    frames, _ = read_video(traj.to_video(tmp_path / "t.mp4", upscale=1))
    assert frames.shape == (6, 64, 64, 3)


def test_compare_real_runs_the_world_beside_the_dream(checkpoint, tmp_path):
    traj = rollout(checkpoint, "heuristic", steps=40, seed=2, compare_real=True)
    assert traj.real_frames.shape == traj.frames.shape == (41, 64, 64, 3)
    # the real world starts from the bank window's true state, so its first frame is the bank's
    assert traj.psnr.shape == (40,) and np.isfinite(traj.psnr).all()
    frames, _ = read_video(traj.to_video(tmp_path / "side.mp4", upscale=1))
    assert frames.shape[2] == 3 * 64 + 4  # real | dream | difference


def always_right(obs):
    return 2


def test_policy_callable_and_module_function(checkpoint):
    seen = []
    traj = rollout(checkpoint, lambda obs: seen.append(obs.shape) or 1, steps=3)
    assert seen == [(64, 64, 3)] * 3 and traj.actions.tolist() == [1, 1, 1]
    traj = rollout(checkpoint, "tests.test_rollout:always_right", steps=2)
    assert traj.actions.tolist() == [2, 2]


def test_bad_scripts_are_named(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="3 actions but 5 steps"):
        rollout(checkpoint, [0, 1, 2], steps=5)
    bad = tmp_path / "acts.txt"
    bad.write_text("0 1 2")
    with pytest.raises(ValueError, match="cannot read a policy"):
        rollout(checkpoint, str(bad), steps=2)
    script = tmp_path / "acts.json"
    script.write_text(json.dumps([0, 9]))
    with pytest.raises(ValueError, match="Discrete"):
        rollout(checkpoint, str(script), steps=2)


def test_action_effect_compares_the_dream_and_the_world_under_opposite_actions(checkpoint):
    import torch

    from simworld.rollout import action_effect
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    res = action_effect(model, starts=2, steps=4)
    assert res["actions"] == [0, 2]  # left vs right
    assert len(res["dream"]) == len(res["real"]) == 4
    assert res["real"][-1] > 0  # the real paddle moves apart
    assert res["dream"][-1] > 0 and res["ratio"] > 0  # random weights still read the action
    with torch.no_grad():  # a dream deaf to its actions scores 0
        for p in model.dynamics.action_emb.parameters():
            p.zero_()
    deaf = action_effect(model, starts=2, steps=4)
    assert deaf["ratio"] == 0 and deaf["real"] == res["real"]


def test_action_effect_says_whether_held_actions_end_and_pay_as_in_the_world(checkpoint, monkeypatch):
    from simworld.rollout import action_effect
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    step = model.step

    def with_end(p):  # the dream's termination head fixed at p
        def patched(*args, **kwargs):
            frames, latent, reward, _ = step(*args, **kwargs)
            return frames, latent, np.ones_like(reward), np.full_like(reward, p)

        return patched

    monkeypatch.setattr(model, "step", with_end(1.0))
    ends = action_effect(model, starts=2, steps=4)
    monkeypatch.setattr(model, "step", with_end(0.0))
    never = action_effect(model, starts=2, steps=4)
    assert ends["ended"]["dream"] == [1.0, 1.0] and never["ended"]["dream"] == [0.0, 0.0]
    assert ends["held_return"]["dream"] == [1.0, 1.0]  # paid once, then over
    assert never["held_return"]["dream"] == [4.0, 4.0]  # paid every step of the four
    assert ends["ended"]["real"] == never["ended"]["real"]  # the world is the world
    assert len(ends["held_return"]["real"]) == 2


def test_action_effect_per_state_dimension_through_a_readout(checkpoint):
    import torch

    from simworld.probes.readout import StateReadout
    from simworld.rollout import action_effect
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    torch.manual_seed(0)
    readout = StateReadout(3, (64, 64), width=4, context=3)  # untrained: any change in the frames moves it
    res = action_effect(model, starts=2, steps=4, readout=readout)
    assert len(res["state_ratio"]) == 3 and len(res["state_dream"]) == len(res["state_real"]) == 4
    assert min(res["state_real"][-1]) > 0  # the real paddle moves apart, and so do the readings
    assert min(res["state_ratio"]) > 0
    with torch.no_grad():  # a dream deaf to its actions reads the same states down both branches
        for p in model.dynamics.action_emb.parameters():
            p.zero_()
    deaf = action_effect(model, starts=2, steps=4, readout=readout)
    assert deaf["state_ratio"] == [0.0, 0.0, 0.0] and deaf["state_real"] == res["state_real"]


def test_teacher_forced_action_effect_predicts_each_step_from_the_real_frames_before_it(
    checkpoint, monkeypatch
):
    import torch

    from simworld.probes.readout import StateReadout
    from simworld.rollout import action_effect
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    reset, step = model.reset, model.step

    def frozen_reset(frames, *args, **kwargs):  # a model that repeats the newest context frame
        state = reset(frames, *args, **kwargs)
        state.newest = np.asarray(frames)[:, -1]
        return state

    def frozen_step(state, *args, **kwargs):
        _, latent, reward, prob = step(state, *args, **kwargs)
        return state.newest, latent, reward, prob

    monkeypatch.setattr(model, "reset", frozen_reset)
    monkeypatch.setattr(model, "step", frozen_step)
    torch.manual_seed(0)
    readout = StateReadout(3, (64, 64), width=4, context=1)  # reads the newest frame alone
    res = action_effect(model, starts=2, steps=4, readout=readout, teacher_forced=True)
    teacher, real = np.array(res["state_teacher"]), np.array(res["state_real"])
    assert teacher.shape == real.shape == (4, 3) and len(res["state_ratio_teacher"]) == 3
    # predicted from the real frames up to step k, a frozen frame shows the world's step k - 1
    np.testing.assert_allclose(teacher[0], 0.0, atol=1e-6)  # both branches start from the same frame
    np.testing.assert_allclose(teacher[1:], real[:-1], rtol=1e-5, atol=1e-6)
    assert min(res["state_ratio_teacher"]) > 0


def test_policy_outcome_sets_the_dreams_return_beside_the_worlds(checkpoint, monkeypatch):
    from simworld.rollout import policy_outcome
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    step = model.step

    def with_end(p):  # the dream pays 1 a step and ends with probability p
        def patched(*args, **kwargs):
            frames, latent, reward, _ = step(*args, **kwargs)
            return frames, latent, np.ones_like(reward), np.full_like(reward, p)

        return patched

    seen = []
    monkeypatch.setattr(model, "step", with_end(0.0))
    never = policy_outcome(model, lambda f: seen.append(f.copy()) or always_right(f), starts=3, steps=5)
    # per start, the policy plays 5 steps in the dream, seeing its frames, then 5 in the real world
    assert len(seen) == 30 and not np.array_equal(seen[0], seen[1])
    monkeypatch.setattr(model, "step", with_end(1.0))
    ends = policy_outcome(model, always_right, starts=3, steps=5)
    assert never["return"]["dream"] == 5.0 and never["ended"]["dream"] == 0.0  # paid every step
    assert ends["return"]["dream"] == 1.0 and ends["ended"]["dream"] == 1.0  # paid once, then over
    assert ends["return"]["real"] == never["return"]["real"]  # the same actions in the same world
    assert ends["overrating"] == ends["return"]["dream"] - ends["return"]["real"]
    assert len(ends["per_start_return"]["real"]) == 3
    # closed loop: the policy acting on the real frames; a fixed action script acts as the replay does
    assert ends["return"]["real_closed"] == ends["return"]["real"]
    assert ends["ended"]["real_closed"] == ends["ended"]["real"]
    from simworld.rollout import _bank_start

    first = _bank_start(model, np.random.default_rng(0))  # policy_outcome's first start (seed 0)
    np.testing.assert_array_equal(seen[5], first["frames"][-1])  # the real world set to its true state
