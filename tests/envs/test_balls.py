"""BallsEnv: the Gymnasium contract, state round trips, physics and the heuristic."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import simworld  # noqa: F401
from envs.balls import BallsEnv
from envs.render import world_to_px


def _run(env: BallsEnv, actions: list[int]) -> tuple[list[np.ndarray], list[float], list[dict]]:
    frames, rewards, states = [], [], []
    for a in actions:
        obs, reward, terminated, _, info = env.step(a)
        frames.append(obs)
        rewards.append(reward)
        states.append(info["state"])
        if terminated:
            break
    return frames, rewards, states


def _drop_scene(env: BallsEnv, ball_x: float, paddle_x: float) -> None:
    """One ball at rest high above ``ball_x``, the paddle still at ``paddle_x``."""
    env.reset(seed=0)
    s = env.get_state()
    s["ball_mask"][:] = 0.0
    s["ball_mask"][0] = 1.0
    s["ball_radius"][0], s["ball_mass"][0] = 0.5, np.pi * 0.25
    s["ball_pos"][0] = [ball_x, 7.0]
    s["ball_vel"][0] = [0.0, 0.0]
    s["paddle_pos"][0], s["paddle_vel"][:] = paddle_x, 0.0
    env.set_state(s)


def test_registered_env_passes_gymnasium_and_sb3_checkers() -> None:
    env = gym.make("simworld/Balls-v0")
    assert env.spec.max_episode_steps == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the checkers report problems as warnings
        check_env(env.unwrapped)
        sb3_check_env(env)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(env.render(), obs)


def test_same_seed_same_actions_give_identical_episodes() -> None:
    actions = np.random.default_rng(0).integers(0, 3, size=40).tolist()
    runs = []
    for _ in range(2):
        env = BallsEnv(num_balls=3)
        first, _ = env.reset(seed=7)
        runs.append((first, *_run(env, actions)))
    (first_a, frames_a, rewards_a, states_a), (first_b, frames_b, rewards_b, states_b) = runs
    np.testing.assert_array_equal(first_a, first_b)
    np.testing.assert_array_equal(np.stack(frames_a), np.stack(frames_b))
    assert rewards_a == rewards_b
    for sa, sb in zip(states_a, states_b, strict=True):
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])
    other, _ = BallsEnv(num_balls=3).reset(seed=8)
    assert not np.array_equal(other, first_a)


def test_set_state_reproduces_frame_state_and_trajectory() -> None:
    source = BallsEnv(num_balls=3)
    source.reset(seed=3)
    for _ in range(15):
        source.step(source.heuristic_action())
    state = source.get_state()
    target = BallsEnv(num_balls=3)
    target.reset(seed=99)
    frame = target.set_state(state)
    np.testing.assert_array_equal(frame, source.render())
    np.testing.assert_array_equal(target.render(), frame)
    restored = target.get_state()
    assert restored.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(restored[key], state[key], err_msg=key)
    for _ in range(20):
        a = source.heuristic_action()
        assert target.heuristic_action() == a
        _, _, term_a, _, info_a = source.step(a)
        _, _, term_b, _, info_b = target.step(a)
        np.testing.assert_allclose(info_b["state"]["ball_pos"], info_a["state"]["ball_pos"], atol=1e-6)
        np.testing.assert_allclose(info_b["state"]["paddle_pos"], info_a["state"]["paddle_pos"], atol=1e-6)
        if term_a or term_b:
            break


def test_set_state_rejects_missing_or_misshaped_keys() -> None:
    env = BallsEnv(num_balls=(1, 2))
    env.reset(seed=0)
    state = env.get_state()
    missing = {k: v for k, v in state.items() if k != "paddle_pos"}
    with pytest.raises(ValueError, match="paddle_pos"):
        env.set_state(missing)
    with pytest.raises(ValueError, match="ball_pos"):
        env.set_state({**state, "ball_pos": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="scale"):
        env.set_state({**state, "scale": np.array(1.0)})


def test_frame_shows_each_ball_in_its_colour_at_its_state_position() -> None:
    env = BallsEnv(num_balls=3, frame_size=(48, 80))  # non-square: the world is 10 x 6 units
    obs, info = env.reset(seed=1)
    assert obs.shape == (48, 80, 3)
    state = info["state"]
    np.testing.assert_allclose(state["world_size"], [10.0, 6.0])
    for i in range(3):
        col, row = world_to_px(state["ball_pos"][i], float(state["scale"]), 48).astype(int)
        np.testing.assert_allclose(obs[row, col], BallsEnv.BALL_COLORS[i], atol=1)
    col, row = world_to_px(state["paddle_pos"], float(state["scale"]), 48).astype(int)
    np.testing.assert_allclose(obs[row, col], BallsEnv.PADDLE_COLOR, atol=1)
    np.testing.assert_array_equal(obs[-1, 0], BallsEnv.BACKGROUND_COLOR)
    for _ in range(10):
        obs, *_ = env.step(env.heuristic_action())
        assert obs.shape == (48, 80, 3)


def test_ball_landing_on_still_paddle_scores_and_elsewhere_terminates() -> None:
    env = BallsEnv(num_balls=1)
    _drop_scene(env, ball_x=5.0, paddle_x=5.0)
    total = 0.0
    for _ in range(40):
        _, reward, terminated, _, _ = env.step(1)
        total += reward
        assert not terminated
    assert total == 1.0

    _drop_scene(env, ball_x=1.0, paddle_x=8.0)
    for _ in range(40):
        _, reward, terminated, truncated, _ = env.step(1)
        assert reward == 0.0 and not truncated
        if terminated:
            break
    assert terminated


def test_elastic_bounce_keeps_apex_height() -> None:
    env = BallsEnv(num_balls=1)
    _drop_scene(env, ball_x=5.0, paddle_x=5.0)
    heights = np.array([env.step(1)[4]["state"]["ball_pos"][0, 1] for _ in range(600)])
    apexes = [h for prev, h, nxt in zip(heights, heights[1:], heights[2:], strict=False) if prev <= h > nxt]
    assert len(apexes) >= 10
    np.testing.assert_allclose(apexes, 7.0, rtol=0.02)


def test_heuristic_outlasts_random_play() -> None:
    cap = 200
    heuristic, random = [], []
    for seed in range(3):
        env = BallsEnv(num_balls=1)
        env.reset(seed=seed)
        heuristic.append(sum(1 for _ in _episode(env, cap, None)))
        env.reset(seed=seed)
        random.append(sum(1 for _ in _episode(env, cap, np.random.default_rng(seed))))
    assert heuristic == [cap] * 3
    assert np.mean(random) < 0.5 * cap


def test_heuristic_episode_lengths_vary_with_three_balls() -> None:
    lengths = []
    for seed in range(4):
        env = BallsEnv(num_balls=3)
        env.reset(seed=seed)
        lengths.append(sum(1 for _ in _episode(env, 300, None)))
    assert len(set(lengths)) > 1


def _episode(env: BallsEnv, cap: int, rng: np.random.Generator | None):
    """Yield steps until termination or ``cap``; the heuristic plays when ``rng`` is None."""
    for _ in range(cap):
        action = env.heuristic_action() if rng is None else int(rng.integers(3))
        _, _, terminated, _, _ = env.step(action)
        yield
        if terminated:
            return


def test_invalid_action_names_the_action_space() -> None:
    env = BallsEnv()
    env.reset(seed=0)
    for bad in (3, -1, 1.0, "left"):
        with pytest.raises(ValueError, match=r"Discrete\(3\)"):
            env.step(bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_balls": 0}, "num_balls"),
        ({"num_balls": 4}, "num_balls"),
        ({"num_balls": (3, 1)}, "num_balls"),
        ({"radius_range": (-0.1, 0.5)}, "radius_range"),
        ({"radius_range": (0.4, 3.0)}, "radius_range"),
        ({"speed_range": (2.0, 1.0)}, "speed_range"),
        ({"frame_size": (0, 64)}, "frame_size"),
        ({"frame_size": (64,)}, "frame_size"),
        ({"frame_size": (64.5, 64)}, "frame_size"),
        ({"gravity": -1.0}, "gravity"),
        ({"restitution": 1.5}, "restitution"),
        ({"substeps": 0}, "substeps"),
        ({"paddle_width": 20.0}, "paddle_width"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_constructor_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BallsEnv(**kwargs)


def test_world_params_rebuild_the_same_world_from_json() -> None:
    env = BallsEnv(num_balls=2, frame_size=(48, 64), gravity=3.0)
    clone = BallsEnv(**json.loads(json.dumps(env.world_params)))
    assert clone.world_params == env.world_params
    np.testing.assert_array_equal(clone.reset(seed=5)[0], env.reset(seed=5)[0])


def test_vector_env_stacks_state() -> None:
    envs = gym.vector.SyncVectorEnv([lambda: BallsEnv(num_balls=(1, 3)) for _ in range(2)])
    _, info = envs.reset(seed=[0, 1])
    assert info["state"]["ball_pos"].shape == (2, 3, 2)
    _, _, _, _, info = envs.step(np.array([0, 2]))
    assert info["state"]["scale"].shape == (2,)
    envs.close()


# The rasteriser is shared by both worlds; these checks live here because BallsEnv is its first user.


def test_antialiased_shapes_cover_their_true_area() -> None:
    from envs.render import draw_disk, draw_polygon, new_canvas, rect_vertices

    canvas = new_canvas(40, 40)
    draw_disk(canvas, (20.3, 17.8), 5.0, (255.0, 0.0, 0.0))
    assert canvas[..., 0].sum() / 255 == pytest.approx(np.pi * 25, rel=0.01)
    assert canvas[..., 1:].max() == 0.0

    canvas = new_canvas(40, 40)
    draw_polygon(canvas, rect_vertices((19.6, 20.2), (8.0, 8.0), np.pi / 6)[::-1], (0.0, 255.0, 0.0))
    assert canvas[..., 1].sum() / 255 == pytest.approx(64.0, rel=0.02)


def test_world_to_px_flips_y() -> None:
    np.testing.assert_allclose(world_to_px([[0.0, 0.0], [1.0, 2.0]], 10.0, 64), [[0.0, 64.0], [10.0, 44.0]])
