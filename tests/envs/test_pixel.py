import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import simworld  # noqa: F401

PIXEL_IDS = ["simworld/PixelCartPole-v1", "simworld/PixelPendulum-v1"]


@pytest.mark.parametrize("env_id", PIXEL_IDS)
def test_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize("env_id", PIXEL_IDS)
def test_frames_are_resized_render_and_state_is_the_env_observation(env_id):
    env = gym.make(env_id, frame_size=(48, 80))
    obs, info = env.reset(seed=3)
    assert obs.shape == (48, 80, 3) and obs.dtype == np.uint8
    assert obs.std() > 5  # a picture, not a blank frame
    inner = gym.make(env_id.replace("simworld/Pixel", ""))
    inner_obs, _ = inner.reset(seed=3)
    np.testing.assert_allclose(info["state"]["obs"], inner_obs, rtol=1e-6)
    assert np.all(info["state"]["scale"] > 0)


@pytest.mark.parametrize("env_id", PIXEL_IDS)
def test_seeded_determinism(env_id):
    def run(seed):
        env = gym.make(env_id)
        frames = [env.reset(seed=seed)[0]]
        env.action_space.seed(0)
        for _ in range(10):
            frames.append(env.step(env.action_space.sample())[0])
        return np.stack(frames)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1)[0], run(2)[0])


@pytest.mark.parametrize("env_id", PIXEL_IDS)
def test_set_state_round_trip(env_id):
    a, b = gym.make(env_id), gym.make(env_id)
    a.reset(seed=0)
    b.reset(seed=1)
    a.action_space.seed(0)
    for _ in range(5):
        frame, *_, info = a.step(a.action_space.sample())
    frame_b = b.unwrapped.set_state(info["state"])
    if "Pendulum" not in env_id:  # Pendulum draws the previous torque, which a restart does not have
        np.testing.assert_array_equal(frame_b, frame)
    np.testing.assert_allclose(b.unwrapped.get_state()["sim"], info["state"]["sim"])
    for _ in range(5):
        action = a.action_space.sample()
        fa, *_ = a.step(action)
        fb, *_ = b.step(action)
        np.testing.assert_array_equal(fa, fb)


def test_heuristic_balances_cartpole_longer_than_random():
    env = gym.make("simworld/PixelCartPole-v1")
    env.action_space.seed(0)

    def episode_length(policy, seed):
        env.reset(seed=seed)
        for t in range(1, 501):
            _, _, term, trunc, _ = env.step(policy())
            if term or trunc:
                return t
        return 500

    heuristic = np.mean([episode_length(env.unwrapped.heuristic_action, s) for s in range(3)])
    random = np.mean([episode_length(env.action_space.sample, s) for s in range(3)])
    assert heuristic > 5 * random


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="NoSuchEnv"):
        gym.make("simworld/Pixel-v0", env_id="NoSuchEnv-v9")
    env = gym.make("simworld/PixelCartPole-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(7)
    with pytest.raises(ValueError, match="sim"):
        env.unwrapped.set_state({"obs": np.zeros(4)})
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.set_state({"sim": np.zeros(3)})
