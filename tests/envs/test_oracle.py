"""The oracle dream: the dream's starts and horizon on the real world."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.oracle import BankStart, load_bank, oracle_vector_env
from simworld.data.store import EpisodeStore

CARTPOLE = {"name": "cartpole", "id": "simworld/PixelCartPole-v1", "max_episode_steps": 500, "kwargs": {}}
BALLS = {"name": "balls", "id": "simworld/Balls-v0", "max_episode_steps": None, "kwargs": {}}


@pytest.fixture(scope="module")
def cartpole_store(tmp_path_factory):
    from simworld.data.collect import CollectConfig, collect
    from simworld.worlds import WorldConfig

    out = tmp_path_factory.mktemp("store") / "cartpole"
    cfg = CollectConfig(
        world=WorldConfig(**CARTPOLE), out=str(out), episodes=4, policy="random", workers=1, progress=False
    )
    collect(cfg)
    return EpisodeStore(out)


def test_the_oracle_replays_the_real_episodes_its_starts_come_from(cartpole_store):
    bank = load_bank(cartpole_store.root, size=8, frames=3, episode_starts=0.5)
    env = gym.wrappers.TimeLimit(BankStart(gym.make(CARTPOLE["id"]), bank), 10)
    firsts = 0
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        i = info["bank_index"]
        ep = cartpole_store.load(int(bank["episode"][i]))
        t = int(bank["start"][i]) + 2  # the window's last frame: where the world restarts
        firsts += bank["start"][i] == 0
        np.testing.assert_array_equal(info["context_frames"], ep.frames[t - 2 : t + 1])
        np.testing.assert_array_equal(obs, ep.frames[t])
        # the store's own actions from there reproduce its frames: a perfect world model
        for k in range(t, min(t + 10, len(ep.actions))):
            obs, reward, terminated, truncated, _ = env.step(int(ep.actions[k]))
            np.testing.assert_array_equal(obs, ep.frames[k + 1])
            assert terminated == bool(ep.terminated[k])
            if terminated or truncated:
                break
    assert firsts >= 1  # half the bank's windows begin an episode


def test_vector_oracle_truncates_at_the_horizon_and_restarts_from_the_bank(cartpole_store):
    bank = load_bank(cartpole_store.root, size=8)
    venv = oracle_vector_env(CARTPOLE, bank, num_envs=3, max_episode_steps=4)
    obs, info = venv.reset(seed=0)
    np.testing.assert_array_equal(obs, info["context_frames"][:, -1])
    steps = np.zeros(3, int)
    for _ in range(12):
        obs, _, terminated, truncated, info = venv.step(np.ones(3, np.int64))
        steps += 1
        done = terminated | truncated
        assert (steps[truncated] == 4).all() and (steps <= 4).all()
        if done.any():  # same-step autoreset: the last frame kept, the new episode starts on its context
            assert info["_final_obs"][done].all() and info["_context_frames"][done].all()
            np.testing.assert_array_equal(obs[done], info["context_frames"][done, -1])
        steps[done] = 0
    check_env(gym.wrappers.TimeLimit(BankStart(gym.make(CARTPOLE["id"]), bank), 4), skip_render_check=True)


def test_a_world_models_start_bank_serves_the_oracle(checkpoint):
    bank = load_bank(checkpoint)
    venv = oracle_vector_env(BALLS, bank, num_envs=2, max_episode_steps=5)
    obs, info = venv.reset(seed=1)
    np.testing.assert_array_equal(obs, info["context_frames"][:, -1])
    obs, reward, *_ = venv.step(np.array([0, 2]))
    assert obs.shape == (2, 64, 64, 3) and reward.dtype.kind == "f"


def test_the_oracle_names_what_it_cannot_start_from(tmp_path, cartpole_store):
    with pytest.raises(FileNotFoundError, match="neither a world-model directory"):
        load_bank(tmp_path)
    bank = load_bank(cartpole_store.root, size=4)
    stateless = {k: v for k, v in bank.items() if not k.startswith("state/")}
    with pytest.raises(ValueError, match="no true states"):
        BankStart(gym.make(CARTPOLE["id"]), stateless)
    with pytest.raises(ValueError, match="start bank's frames"):
        BankStart(gym.make(CARTPOLE["id"], frame_size=(32, 32)), bank)


def test_state_noise_kicks_the_true_state_by_the_size_asked_and_nothing_else(cartpole_store):
    """A perfect model with random errors: the pole's angular velocity moves by ~std per step;
    with std 0 the oracle is unchanged; the cart, not kicked, follows the same physics."""
    from envs.oracle import StateNoise

    bank = load_bank(cartpole_store.root, size=8)
    plain = BankStart(gym.make(CARTPOLE["id"]), bank)
    jumps = []
    for std, seed in [(0.0, 1), (0.25, 1)]:
        env = StateNoise(BankStart(gym.make(CARTPOLE["id"]), bank), {3: std})
        obs_n, info_n = env.reset(seed=seed)
        obs_p, info_p = plain.reset(seed=seed)
        assert info_n["bank_index"] == info_p["bank_index"]
        for _ in range(3):
            before = env.unwrapped.get_state()["sim"].copy()
            obs_n, _, term_n, _, info_n = env.step(1)
            obs_p, _, term_p, _, info_p = plain.step(1)
            after_n, after_p = info_n["state"]["sim"], info_p["state"]["sim"]
            if std == 0:
                np.testing.assert_array_equal(obs_n, obs_p)
                np.testing.assert_array_equal(after_n, after_p)
            else:
                jumps.append(after_n[3] - after_p[3])
                assert after_n[0] == pytest.approx(before[0] + 0.02 * before[1])  # the cart's own Euler step
            plain.unwrapped.set_state({**info_n["state"], "sim": after_n})  # go on from the same state
    assert 0.05 < np.max(np.abs(jumps)) < 1.5  # kicks of about 0.25 rad/s, one of three at least
    with pytest.raises(ValueError, match="std >= 0"):
        StateNoise(gym.make(CARTPOLE["id"]), {3: -1.0})
    env = StateNoise(gym.make(CARTPOLE["id"]), {7: 0.1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="dimension 7"):
        env.step(0)
