"""The dream environments over a tiny random-weights world model built here."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import simworld  # noqa: F401
from envs.dream import DreamEnv, DreamVectorEnv
from simworld.diffusion.edm import precondition, sampling_sigmas
from simworld.world_model import WorldModel
from tests.conftest import bank_from_world


def test_check_env_gymnasium_and_sb3(checkpoint):
    env = gym.make("simworld/Dream-v0", checkpoint=checkpoint)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)
    assert env.observation_space.shape == (64, 64, 3)
    assert env.action_space == gym.spaces.Discrete(3)


def test_make_vec_gives_one_batched_env(checkpoint):
    envs = gym.make_vec(
        "simworld/Dream-v0", num_envs=3, vectorization_mode="vector_entry_point", checkpoint=checkpoint
    )
    assert isinstance(envs, DreamVectorEnv) and envs.max_episode_steps == 1000
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    obs, r, term, trunc, info = envs.step(np.array([0, 1, 2]))
    assert obs.shape == (3, 64, 64, 3) and r.shape == (3,) and info["step"].tolist() == [1, 1, 1]
    assert np.all((info["termination_prob"] >= 0) & (info["termination_prob"] <= 1))


def test_next_step_autoreset(checkpoint):
    envs = DreamVectorEnv(2, checkpoint, max_episode_steps=2)
    envs.reset(seed=1)
    envs.step(np.array([0, 0]))
    _, _, term, trunc, info = envs.step(np.array([0, 0]))
    assert trunc.all() and not term.any() and info["step"].tolist() == [2, 2]
    obs, r, term, trunc, info = envs.step(np.array([2, 2]))  # the autoreset step: actions ignored
    assert info["step"].tolist() == [0, 0] and not (term | trunc).any() and np.all(r == 0)
    bank_last = envs.bank["frames"][:, -1]
    assert all(any(np.array_equal(o, b) for b in bank_last) for o in obs), "restarted from bank frames"


def test_seeded_determinism(checkpoint):
    def run(seed):
        env = DreamEnv(checkpoint)
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(a)[0] for a in [0, 2, 2, 1, 0]]
        return np.stack(frames)

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_image_to_world_and_latent_obs(checkpoint):
    frames = bank_from_world(1, 2, seed=42)["frames"][0]
    env = DreamEnv(checkpoint)
    obs, _ = env.reset(seed=0, options={"frames": frames})
    np.testing.assert_array_equal(obs, frames[-1])
    latent_env = DreamEnv(checkpoint, obs_mode="latent")
    obs, _ = latent_env.reset(seed=0, options={"frames": frames})
    assert obs.shape == latent_env.observation_space.shape == (48, 16, 16) and obs.dtype == np.float32
    assert latent_env.step(1)[0].shape == (48, 16, 16)


def test_bad_input_names_the_problem(checkpoint, tmp_path):
    env = DreamEnv(checkpoint)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(5)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(np.array([0.5]))
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        gym.make("simworld/Dream-v0", checkpoint=tmp_path / "missing")
    with pytest.raises(ValueError, match="frames"):
        env.reset(options={"frames": np.zeros((2, 32, 32, 3), np.uint8)})


def test_stepping_after_the_end_needs_reset(checkpoint):
    env = gym.make("simworld/Dream-v0", checkpoint=checkpoint, termination_threshold=0.0)
    env.reset(seed=0)
    assert env.step(0)[2]  # terminated: any probability is above a threshold of 0
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def full_history_rollout(model, frames, actions, steps, seed):
    """Reference without a KV cache: every denoising pass recomputes all frames since reset.

    Draws the same noise in the same order as ``WorldModel.step``, so the two must agree."""
    gen = torch.Generator().manual_seed(seed)
    d = model.diffusion
    lat = model.tokenizer.encode(
        torch.as_tensor(frames).movedim(-1, -3).float() / 127.5 - 1
    )  # (1, t0, c, h, w)
    hist, sig, acts, valid = [], [], [], []
    prev = [0] + list(actions)
    for i in range(lat.shape[1]):
        noise = torch.randn(lat[:, i : i + 1].shape, generator=gen)
        hist.append(lat[:, i : i + 1] + d.context_sigma * noise)
        sig.append(d.context_sigma)
        acts.append(prev[i])
        valid.append(i > 0)

    def forward(xs, sigmas, a, v):
        x = torch.cat(xs, 1)
        s = torch.tensor(sigmas)[None]
        pre = precondition(s[..., None, None, None], d.sigma_data)
        out, r, t = model.dynamics(
            pre.c_in * x, pre.c_noise[..., 0, 0, 0], torch.tensor([a]), torch.tensor([v])
        )
        return pre.c_skip[:, -1] * x[:, -1] + pre.c_out[:, -1] * out[:, -1], r[:, -1], t[:, -1]

    outs = []
    sigmas = sampling_sigmas(d)
    for k in range(steps):
        a = k % 3
        x = torch.randn((1, *lat.shape[2:]), generator=gen) * sigmas[0]
        for i in range(len(sigmas) - 1):
            den, _, _ = forward(hist + [x[:, None]], sig + [float(sigmas[i])], acts + [a], valid + [True])
            x = x + (sigmas[i + 1] - sigmas[i]) * (x - den) / sigmas[i]
        noise = torch.randn(x[:, None].shape, generator=gen)
        hist.append(x[:, None] + d.context_sigma * noise)
        sig.append(d.context_sigma)
        acts.append(a)
        valid.append(True)
        outs.append(x)
    return torch.stack(outs, 1)  # (1, steps, c, h, w)


def test_kv_cache_stepping_matches_full_recompute_beyond_the_window(checkpoint):
    model = WorldModel.from_pretrained(checkpoint)  # context 4: 7 steps slide the window 4 times
    frames = model.start_bank["frames"][:1]
    actions = model.start_bank["actions"][:1]
    with torch.no_grad():
        ref = full_history_rollout(model, frames, actions[0].tolist(), steps=7, seed=3)
        state = model.reset(frames, actions, generator=torch.Generator().manual_seed(3))
        cached = torch.stack([model.step(state, np.array([k % 3]), decode=False)[1] for k in range(7)], 1)
    torch.testing.assert_close(cached, ref, atol=1e-4, rtol=1e-4)


def test_stepping_without_the_cache_is_close_and_cannot_mix(checkpoint):
    model = WorldModel.from_pretrained(checkpoint)
    frames, actions = model.start_bank["frames"][:2], model.start_bank["actions"][:2]
    with torch.no_grad():
        a = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
        b = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
        lat_a = model.step(a, np.array([1, 2]), decode=False)[1]
        lat_b = model.step(b, np.array([1, 2]), decode=False, use_cache=False)[1]
        # the bank's context fits in the window, so the recomputation sees exactly what the cache holds
        torch.testing.assert_close(lat_b, lat_a, atol=1e-4, rtol=1e-4)
        with pytest.raises(RuntimeError, match="without the KV cache"):
            model.step(b, np.array([1, 2]))
        model.reset(frames, actions, state=b)
        model.step(b, np.array([1, 2]))  # a full reset makes the cache whole again


def test_rewards_snap_to_the_values_the_world_gives(checkpoint):
    model = WorldModel.from_pretrained(checkpoint)
    model.cfg.reward_values = [0.0, 1.0]
    for bias, expected in [(0.3, 0.0), (0.8, 1.0)]:
        with torch.no_grad():
            model.dynamics.reward_head[-1].weight.zero_()
            model.dynamics.reward_head[-1].bias.fill_(bias)
        envs = DreamVectorEnv(2, model)
        envs.reset(seed=0)
        _, r, _, _, info = envs.step(np.array([0, 1]))
        assert r.tolist() == [expected, expected]
        np.testing.assert_allclose(info["reward_raw"], bias, atol=1e-5)
        raw = DreamVectorEnv(2, model, snap_rewards=False)
        raw.reset(seed=0)
        np.testing.assert_allclose(raw.step(np.array([0, 1]))[1], bias, atol=1e-5)


def test_sampled_terminations_keep_an_unsure_models_rate(checkpoint):
    """termination_threshold=None ends each step with the predicted probability, reproducibly."""

    def ends(threshold, seed):
        envs = DreamVectorEnv(num_envs=4, checkpoint=checkpoint, termination_threshold=threshold)
        step = envs.model.step
        envs.model.step = lambda *a, **k: (*step(*a, **k)[:3], np.full(4, 0.3, np.float32))
        envs.reset(seed=seed)
        out = []
        for _ in range(40):
            _, _, terminated, _, _ = envs.step(np.ones(4, dtype=np.int64))
            out.append(terminated)
        return np.array(out)

    assert not ends(0.5, 0).any()  # a threshold drops every terminal step the model is unsure of
    sampled = ends(None, 0)
    assert 0.15 < sampled.mean() < 0.45, sampled.mean()  # ~0.3 of the steps (some are autoresets)
    np.testing.assert_array_equal(sampled, ends(None, 0))
