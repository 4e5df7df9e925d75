"""The probe wrappers' info contract, and truncation of implausible episodes."""

import gymnasium as gym
import numpy as np
import pytest

from envs.dream import DreamEnv, DreamVectorEnv
from envs.probe_wrapper import ContactRewardVectorWrapper, PhysicsProbeVectorWrapper, PhysicsProbeWrapper
from simworld.probes import violations as V
from simworld.probes.contacts import agent_contact, floor_contact
from simworld.probes.online import STEP_KEYS
from simworld.probes.world import WorldSpec


class Replay(gym.Env):
    """Plays a fixed video, one frame per step; truncates at its end."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, frames):
        self.frames = frames
        self.observation_space = gym.spaces.Box(0, 255, frames.shape[1:], np.uint8)
        self.action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frames[0], {}

    def step(self, action):
        self.t += 1
        return self.frames[self.t], 0.0, False, self.t == len(self.frames) - 1, {}


def test_info_contract_on_a_real_world():
    env = PhysicsProbeWrapper(gym.make("simworld/Balls-v0", max_episode_steps=15, num_balls=2))
    _, info = env.reset(seed=0)
    assert set(info["probe"]) == set(STEP_KEYS) and info["probe"]["violation"] == 0.0
    for _ in range(15):
        _, _, term, trunc, info = env.step(env.unwrapped.heuristic_action())
        assert set(info["probe"]) == set(STEP_KEYS) and not info["probe_truncated"]
        assert ("probe_summary" in info) == (term or trunc)
    assert trunc and info["probe_summary"]["frames"] == 16.0
    assert info["probe_summary"]["permanence"] == 1.0 and info["probe_summary"]["gravity_error"] < 0.05


def test_max_violation_truncates_an_implausible_episode(balls_clip):
    env = V.make_balls()
    spec = WorldSpec.from_env(env)
    bad = V.teleport(balls_clip, env, np.random.default_rng(0), 2.0)
    thresholds = {"continuity": 0.2, "permanence": 1e-3}
    wrapped = PhysicsProbeWrapper(Replay(bad.frames), spec, thresholds, max_violation=1.0)
    wrapped.reset()
    t, trunc = 0, False
    while not trunc:
        _, _, _, trunc, info = wrapped.step(1)
        t += 1
    assert info["probe_truncated"] and t == bad.onset and "probe_summary" in info
    # the real clip plays to its end
    real = PhysicsProbeWrapper(Replay(balls_clip.frames), spec, thresholds, max_violation=1.0)
    real.reset()
    steps = 0
    while True:
        _, _, _, trunc, info = real.step(1)
        steps += 1
        if trunc:
            break
    assert steps == len(balls_clip.frames) - 1 and not info["probe_truncated"]


def test_dream_env_is_scored(checkpoint):
    env = PhysicsProbeWrapper(DreamEnv(checkpoint))
    assert env.world_spec.world_id == "simworld/Balls-v0"
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert set(info["probe"]) == set(STEP_KEYS)


def test_vector_wrapper_summaries_and_autoreset(checkpoint):
    envs = PhysicsProbeVectorWrapper(DreamVectorEnv(2, checkpoint, max_episode_steps=3))
    _, info = envs.reset(seed=0)
    assert info["probe"]["violation"].shape == (2,)
    for _ in range(3):
        _, _, term, trunc, info = envs.step(np.array([0, 2]))
    assert (term | trunc).all() and info["_probe_summary"].all()
    assert info["probe_summary"]["frames"].tolist() == [4.0, 4.0]
    _, _, _, _, info = envs.step(np.array([0, 2]))  # next-step autoreset: scores start afresh
    assert not info["_probe_summary"].any() and np.isnan(info["probe_summary"]["frames"]).all()
    assert info["probe"]["violation"].tolist() == [0.0, 0.0]


def test_vector_max_violation_truncates_then_restarts(checkpoint):
    # random weights dream noise: every ball is lost at once, which a tiny permanence threshold flags
    envs = PhysicsProbeVectorWrapper(
        DreamVectorEnv(2, checkpoint, max_episode_steps=50),
        thresholds={"permanence": 1e-6},
        max_violation=10.0,
    )
    envs.reset(seed=0)
    _, _, _, trunc, info = envs.step(np.array([1, 1]))
    assert trunc.all() and info["probe_truncated"].all() and info["_probe_summary"].all()
    obs, r, term, trunc, info = envs.step(np.array([1, 1]))  # restarted from the start bank
    assert not (term | trunc).any() and np.all(r == 0) and info["probe"]["violation"].tolist() == [0.0, 0.0]
    bank_last = envs.env.bank["frames"][:, -1]
    assert all(any(np.array_equal(o, b) for b in bank_last) for o in obs)


def test_same_step_autoreset_is_refused(checkpoint):
    with pytest.raises(ValueError, match="SAME_STEP"):
        PhysicsProbeVectorWrapper(DreamVectorEnv(1, checkpoint, autoreset_mode="SameStep"))


def _heuristic_balls(num_envs, steps, autoreset_mode):
    """A real Balls vector env played by its heuristic (it bounces balls often), contact-gated."""
    from gymnasium.vector import AutoresetMode

    envs = gym.make_vec(
        "simworld/Balls-v0",
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode(autoreset_mode)},
        max_episode_steps=40,
    )
    spec = WorldSpec.from_env(envs.envs[0])
    gated = ContactRewardVectorWrapper(envs, spec=spec)
    gated.reset(seed=0)
    paid, ungated = [], []
    for _ in range(steps):
        actions = np.array([e.unwrapped.heuristic_action() for e in envs.envs])
        _, r, _, _, info = gated.step(actions)
        paid.append(r)
        ungated.append(info["reward_ungated"])
    return np.array(paid), np.array(ungated)


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_contact_gate_keeps_every_real_bounce(mode):
    paid, ungated = _heuristic_balls(2, 120, mode)
    assert (ungated > 0).sum() >= 4  # the heuristic bounces: there is something to keep
    np.testing.assert_array_equal(paid, ungated)  # the real world only pays shown contacts


def test_contact_test_passes_few_real_steps_without_a_bounce():
    env = gym.make("simworld/Balls-v0", max_episode_steps=200)
    frames, rewards = [env.reset(seed=1)[0]], []
    for _ in range(150):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    frames = np.array(frames)
    near = agent_contact(frames[:-1], frames[1:], WorldSpec.from_env(env))
    assert near[np.array(rewards) > 0].all()
    assert near.mean() < 0.3, near.mean()  # far from the paddle most of the time: those cannot pay


def _paying(step):
    def paying(*args, **kwargs):
        frames, latents, rewards, prob = step(*args, **kwargs)
        return frames, latents, np.ones_like(rewards), prob

    return paying


def test_contact_gate_drops_a_dreams_rewards_its_frames_do_not_show(checkpoint):
    """A dream that pays every step, over random-weights frames without a paddle: nothing is paid."""
    for mode in ["NextStep", "SameStep"]:
        dream = DreamVectorEnv(2, checkpoint, max_episode_steps=3, autoreset_mode=mode)
        dream.model.step = _paying(dream.model.step)
        envs = ContactRewardVectorWrapper(dream)
        envs.reset(seed=0)
        paid = ungated = 0.0
        for _ in range(5):  # through an episode end
            _, r, _, _, info = envs.step(np.array([0, 2]))
            paid, ungated = paid + r.sum(), ungated + info["reward_ungated"].sum()
        assert paid == 0 and ungated >= 8, mode  # (next-step autoreset steps pay nothing anyway)
    with pytest.raises(ValueError, match="max_gap"):
        ContactRewardVectorWrapper(DreamVectorEnv(1, checkpoint), max_gap=-1.0)


def test_floor_check_keeps_every_real_termination_and_passes_few_other_steps():
    env = gym.make("simworld/Balls-v0", max_episode_steps=300)
    spec, rng = WorldSpec.from_env(env), np.random.default_rng(0)
    ends, others = [], []
    for ep in range(12):
        frames, terminated = [env.reset(seed=ep)[0]], []
        while True:
            obs, _, term, trunc, _ = env.step(int(rng.integers(3)))
            frames.append(obs)
            terminated.append(term)
            if term or trunc:
                break
        near = floor_contact(np.array(frames), spec)
        shown, terminated = near[:-1] | near[1:], np.array(terminated)  # as DreamVectorEnv checks a step
        ends.append(shown[terminated])
        others.append(shown[~terminated])
    ends, others = np.concatenate(ends), np.concatenate(others)
    assert len(ends) >= 10 and ends.all()  # a ball touching the floor is always in one of the two frames
    assert others.mean() < 0.15, others.mean()
    with pytest.raises(ValueError, match="floor"):
        floor_contact(np.array(frames), WorldSpec.from_world("simworld/Push-v0"))


def _ending(step, frame=None):
    def ending(*args, **kwargs):
        frames, latents, rewards, prob = step(*args, **kwargs)
        if frame is not None:
            frames = np.repeat(frame[None], len(frames), axis=0)
        return frames, latents, rewards, np.ones_like(prob)

    return ending


def test_floor_check_ends_a_dream_only_at_a_frame_with_a_ball_at_the_floor(checkpoint):
    """A termination head that always fires: the checked dream ends only where a ball is at the floor."""
    env = gym.make("simworld/Balls-v0")
    env.reset(seed=0)
    while True:  # a real terminal frame: a ball on the floor
        obs, _, term, trunc, _ = env.step(1)
        if term or trunc:
            break
    assert term
    for mode in ["NextStep", "SameStep"]:
        dream = DreamVectorEnv(2, checkpoint, autoreset_mode=mode, termination_floor_gap=0.5)
        dream.model.step = _ending(dream.model.step)
        dream.reset(seed=0)
        for _ in range(3):  # random-weights frames: no ball anywhere near the floor
            _, _, term, _, info = dream.step(np.array([0, 2]))
            assert not term.any() and info["termination_prob"].tolist() == [0.0, 0.0], mode
            assert info["termination_prob_ungated"].tolist() == [1.0, 1.0]
        dream.model.step = _ending(dream.model.step, frame=obs)
        _, _, term, _, _ = dream.step(np.array([0, 2]))
        assert term.all(), mode
    unchecked = DreamVectorEnv(2, checkpoint)
    unchecked.model.step = _ending(unchecked.model.step)
    unchecked.reset(seed=0)
    assert unchecked.step(np.array([0, 2]))[2].all()
    with pytest.raises(ValueError, match="termination_floor_gap"):
        DreamVectorEnv(1, checkpoint, termination_floor_gap=-1.0)


def _constant_readout(tmp_path, pole):
    """A readout that reads every frame as the state (0, 0, ``pole``, 0), saved like a trained one."""
    import torch

    from simworld.probes.readout import ReadoutConfig, StateReadout, save_readout

    readout = StateReadout(4)
    with torch.no_grad():
        readout.std.zero_()
        readout.mean.copy_(torch.tensor([0.0, 0.0, pole, 0.0]))
    return save_readout(readout, ReadoutConfig(), tmp_path / f"readout_{pole}", (64, 64), {})


def test_readout_check_ends_a_dream_step_whose_frames_read_past_the_bounds(checkpoint, tmp_path):
    """A head that never fires: the dream still ends where the readout reads the pole past its bound."""
    fallen, upright = _constant_readout(tmp_path, 0.3), _constant_readout(tmp_path, 0.05)
    for mode in ["NextStep", "SameStep"]:
        dream = DreamVectorEnv(
            2, checkpoint, autoreset_mode=mode, termination_readout=fallen, termination_bounds={2: 0.2095}
        )
        dream.model.step = _never_ending(dream.model.step)
        dream.reset(seed=0)
        _, _, term, trunc, info = dream.step(np.array([0, 2]))
        assert term.all() and not trunc.any(), mode
        assert info["readout_out"].all() and info["termination_prob_ungated"].tolist() == [0.0, 0.0]
        dream = DreamVectorEnv(
            2, checkpoint, autoreset_mode=mode, termination_readout=upright, termination_bounds={2: 0.2095}
        )
        dream.model.step = _never_ending(dream.model.step)
        dream.reset(seed=0)
        _, _, term, _, info = dream.step(np.array([0, 2]))
        assert not term.any() and not info["readout_out"].any(), mode
    for bad, match in [({}, "empty"), ({7: 0.2}, "not a state dimension"), ({2: 0.0}, "> 0")]:
        with pytest.raises(ValueError, match=match):
            DreamVectorEnv(1, checkpoint, termination_readout=fallen, termination_bounds=bad)
    with pytest.raises(ValueError, match="go together"):
        DreamVectorEnv(1, checkpoint, termination_readout=fallen)


def test_policy_outcome_ends_the_dream_where_the_readout_reads_past_the_bounds(checkpoint, tmp_path):
    from simworld.rollout import policy_outcome
    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    model.step = _never_ending(model.step)
    kw = dict(starts=2, steps=4, termination_bounds={2: 0.2095})
    fallen = policy_outcome(model, "random", termination_readout=_constant_readout(tmp_path, 0.3), **kw)
    upright = policy_outcome(model, "random", termination_readout=_constant_readout(tmp_path, 0.05), **kw)
    assert fallen["ended"]["dream"] == 1.0 and upright["ended"]["dream"] == 0.0


def _never_ending(step):
    def never(*args, **kwargs):
        frames, latents, rewards, prob = step(*args, **kwargs)
        return frames, latents, rewards, np.zeros_like(prob)

    return never
