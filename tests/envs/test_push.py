"""PushEnv: the Gymnasium contract, state round trips, rewards and the heuristic."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import simworld  # noqa: F401
from envs.push import PushEnv
from envs.render import world_to_px


def _episode(env: PushEnv, cap: int, rng: np.random.Generator | None) -> tuple[int, float, bool]:
    """Play until success or ``cap`` steps (the heuristic when ``rng`` is None); return (length, return, success)."""
    total = 0.0
    for t in range(cap):
        action = env.heuristic_action() if rng is None else rng.uniform(-1, 1, 2).astype(np.float32)
        _, reward, terminated, _, _ = env.step(action)
        total += reward
        if terminated:
            return t + 1, total, True
    return cap, total, False


def test_registered_env_passes_gymnasium_and_sb3_checkers() -> None:
    env = gym.make("simworld/Push-v0")
    assert env.spec.max_episode_steps == 300
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the checkers report problems as warnings
        check_env(env.unwrapped)
        sb3_check_env(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(env.render(), obs)


def test_same_seed_same_actions_give_identical_episodes() -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 2)).astype(np.float32)
    runs = []
    for _ in range(2):
        env = PushEnv()
        first, _ = env.reset(seed=4)
        frames, rewards, states = [first], [], []
        for a in actions:
            obs, reward, _, _, info = env.step(a)
            frames.append(obs)
            rewards.append(reward)
            states.append(info["state"])
        runs.append((np.stack(frames), rewards, states))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    for sa, sb in zip(runs[0][2], runs[1][2], strict=True):
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])
    other, _ = PushEnv().reset(seed=5)
    assert not np.array_equal(other, runs[0][0][0])


def test_set_state_reproduces_frame_state_and_trajectory() -> None:
    source = PushEnv()
    source.reset(seed=2)
    for _ in range(30):  # long enough for the agent to be in contact with the block
        source.step(source.heuristic_action())
    state = source.get_state()
    target = PushEnv()
    target.reset(seed=50)
    frame = target.set_state(state)
    np.testing.assert_array_equal(frame, source.render())
    restored = target.get_state()
    assert restored.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(restored[key], state[key], err_msg=key)
    for _ in range(20):
        a = source.heuristic_action()
        _, reward_a, term_a, _, info_a = source.step(a)
        _, reward_b, term_b, _, info_b = target.step(a)
        for key in ("agent_pos", "block_pos"):
            np.testing.assert_allclose(info_b["state"][key], info_a["state"][key], atol=1e-3, err_msg=key)
        assert reward_b == pytest.approx(reward_a, abs=1e-3)
        if term_a or term_b:
            break


def test_set_state_rejects_missing_or_misshaped_keys() -> None:
    env = PushEnv()
    env.reset(seed=0)
    state = env.get_state()
    with pytest.raises(ValueError, match="goal_pos"):
        env.set_state({k: v for k, v in state.items() if k != "goal_pos"})
    with pytest.raises(ValueError, match="block_angle"):
        env.set_state({**state, "block_angle": np.zeros(2)})
    with pytest.raises(ValueError, match="block_size"):
        env.set_state({**state, "block_size": np.array(-1.0)})


def test_frame_shows_objects_in_their_colours_non_square() -> None:
    env = PushEnv(frame_size=(48, 80))  # the arena is 4 x 2.4 units
    obs, info = env.reset(seed=3)
    assert obs.shape == (48, 80, 3)
    state = info["state"]
    np.testing.assert_allclose(state["world_size"], [4.0, 2.4])
    scale = float(state["scale"])
    for key, color in (("agent_pos", PushEnv.AGENT_COLOR), ("block_pos", PushEnv.BLOCK_COLOR)):
        col, row = world_to_px(state[key], scale, 48).astype(int)
        np.testing.assert_allclose(obs[row, col], color, atol=1, err_msg=key)
    for _ in range(10):
        obs, *_ = env.step(env.heuristic_action())
        assert obs.shape == (48, 80, 3)


def test_block_on_goal_terminates_with_bonus() -> None:
    env = PushEnv()
    env.reset(seed=0)
    state = env.get_state()
    state["block_pos"] = state["goal_pos"] + [0.05, 0.0]
    state["block_vel"][:] = 0.0
    state["agent_pos"] = (
        state["goal_pos"] + [1.0, 0.0] if state["goal_pos"][0] < 2.0 else state["goal_pos"] - [1.0, 0.0]
    )
    env.set_state(state)
    _, reward, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and not truncated
    assert reward == pytest.approx(10.0, abs=1e-6)


def test_reward_is_decrease_in_block_goal_distance() -> None:
    env = PushEnv()
    env.reset(seed=1)
    state = env.get_state()
    to_goal = state["goal_pos"] - state["block_pos"]
    state["block_vel"] = (
        1.5 * to_goal / np.linalg.norm(to_goal)
    )  # slides toward the goal, then friction stops it
    env.set_state(state)
    before = np.linalg.norm(to_goal)
    _, reward, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    after = np.linalg.norm(info["state"]["goal_pos"] - info["state"]["block_pos"])
    assert not terminated
    assert reward > 0
    assert reward == pytest.approx(before - after, abs=1e-12)


def test_agent_stops_when_force_stops() -> None:
    env = PushEnv()
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([1.0, 0.0], dtype=np.float32))
    for _ in range(15):
        _, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert np.linalg.norm(info["state"]["agent_vel"]) < 1e-6


def test_heuristic_reaches_goal_and_beats_random() -> None:
    results = []
    for seed in range(10):
        env = PushEnv()
        env.reset(seed=seed)
        results.append(_episode(env, 300, None))
    success = np.mean([s for _, _, s in results])
    assert success >= 0.5
    random_returns = []
    for seed in range(3):
        env = PushEnv()
        env.reset(seed=seed)
        random_returns.append(_episode(env, 100, np.random.default_rng(seed))[1])
    assert np.mean([r for _, r, _ in results]) > np.mean(random_returns) + 5.0


def test_invalid_action_names_the_action_space() -> None:
    env = PushEnv()
    env.reset(seed=0)
    for bad in (np.array([2.0, 0.0]), np.zeros(3), 0.5, "up", np.array([np.nan, 0.0])):
        with pytest.raises(ValueError, match=r"Box\(-1\.0, 1\.0, \(2,\), float32\)"):
            env.step(bad)
    env.step(np.array([0.5, -0.5]))  # float64 inside the box is accepted


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"frame_size": (64, -1)}, "frame_size"),
        ({"world_size": 0.0}, "world_size"),
        ({"world_size": 1.0}, "world_size"),
        ({"agent_radius": -0.1}, "agent_radius"),
        ({"block_size": 0.0}, "block_size"),
        ({"block_mass": -1.0}, "block_mass"),
        ({"friction": -0.5}, "friction"),
        ({"max_force": 0.0}, "max_force"),
        ({"goal_tolerance": 0.0}, "goal_tolerance"),
        ({"substeps": 0}, "substeps"),
        ({"fps": 2.5}, "fps"),
    ],
)
def test_invalid_constructor_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PushEnv(**kwargs)


def test_world_params_rebuild_the_same_world_from_json() -> None:
    env = PushEnv(frame_size=(64, 80), friction=0.3)
    clone = PushEnv(**json.loads(json.dumps(env.world_params)))
    assert clone.world_params == env.world_params
    np.testing.assert_array_equal(clone.reset(seed=5)[0], env.reset(seed=5)[0])


def test_vector_env_stacks_state() -> None:
    envs = gym.vector.SyncVectorEnv([PushEnv for _ in range(2)])
    _, info = envs.reset(seed=[0, 1])
    assert info["state"]["block_pos"].shape == (2, 2)
    _, _, _, _, info = envs.step(np.zeros((2, 2), dtype=np.float32))
    assert info["state"]["block_angle"].shape == (2,)
    envs.close()
