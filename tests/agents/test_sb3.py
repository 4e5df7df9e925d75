import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecMonitor

import simworld  # noqa: F401
from agents.sb3 import SB3VecEnv
from envs.dream import DreamVectorEnv


def test_terminal_observation_and_time_limit_flags(checkpoint):
    venv = SB3VecEnv(
        DreamVectorEnv(2, checkpoint, max_episode_steps=2, autoreset_mode=AutoresetMode.SAME_STEP)
    )
    venv.seed(0)
    first = venv.reset()
    assert first.shape == (2, 64, 64, 3)
    venv.step(np.array([0, 1]))
    obs, rewards, dones, infos = venv.step(np.array([0, 1]))
    assert dones.all() and rewards.dtype == np.float32
    for i in range(2):
        assert infos[i]["TimeLimit.truncated"] is True
        assert infos[i]["terminal_observation"].shape == (64, 64, 3)
        assert not np.array_equal(infos[i]["terminal_observation"], obs[i]), "obs is already the reset frame"
    obs, _, dones, infos = venv.step(np.array([2, 2]))
    assert not dones.any() and infos == [{}, {}]


def test_same_adapter_over_a_real_world():
    envs = gym.make_vec(
        "simworld/Balls-v0",
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        max_episode_steps=3,
    )
    venv = SB3VecEnv(envs)
    venv.reset()
    for _ in range(3):
        _, _, dones, infos = venv.step(np.array([1, 1]))
    assert dones.all() and all("terminal_observation" in info for info in infos)


def test_next_step_vector_env_is_refused(checkpoint):
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(DreamVectorEnv(1, checkpoint))


def test_ppo_trains_a_few_steps_in_the_dream(checkpoint):
    venv = VecMonitor(
        SB3VecEnv(DreamVectorEnv(2, checkpoint, max_episode_steps=4, autoreset_mode=AutoresetMode.SAME_STEP))
    )
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=8, n_epochs=1, seed=0)
    model.learn(16)
    assert model.num_timesteps == 16
    check_env(gym.make("simworld/Dream-v0", checkpoint=checkpoint), warn=False)


def _bank_windows(venv):
    bank = venv.unwrapped.venv.bank["frames"]  # (n, t0, H, W, 3)
    return [np.concatenate(list(w), axis=-1) for w in bank]


def test_dream_frame_stacks_start_full_of_the_real_context_frames(checkpoint):
    from agents.sb3 import ContextFrameStack

    dream = DreamVectorEnv(2, checkpoint, max_episode_steps=2, autoreset_mode=AutoresetMode.SAME_STEP)
    venv = ContextFrameStack(VecMonitor(SB3VecEnv(dream)), n_stack=4)
    venv.seed(0)
    windows = _bank_windows(venv)
    t0 = dream.bank["frames"].shape[1]
    assert 1 < t0 < 4
    obs = venv.reset()  # (2, H, W, 12): newest frame last
    for i in range(2):
        assert any(np.array_equal(obs[i, ..., -3 * t0 :], w) for w in windows), "stack is not a bank window"
        assert not obs[i, ..., : 3 * (4 - t0)].any()  # older than the context: zeros, as SB3 pads
    first = obs.copy()
    obs, _, dones, infos = venv.step(np.array([0, 1]))
    assert not dones.any()
    assert np.array_equal(obs[..., : 3 * 3], first[..., 3:])  # the stack rolls as usual mid-episode
    obs, _, dones, infos = venv.step(np.array([0, 1]))  # truncated: both restart in this step
    assert dones.all()
    for i in range(2):
        assert any(np.array_equal(obs[i, ..., -3 * t0 :], w) for w in windows)
        assert infos[i]["terminal_observation"].shape == (64, 64, 12)


def test_real_world_frame_stacks_still_start_from_zeros():
    from agents.train import real_venv

    venv = real_venv({"id": "simworld/Balls-v0"}, num_envs=1, seed=0, frame_stack=4)
    obs = venv.reset()  # channels first after VecTransposeImage: (1, 12, H, W)
    assert obs[0, -3:].any() and not obs[0, :9].any()
