"""The separate reward/termination model: it learns what a frame pair shows, and rollouts read it."""

import numpy as np
import pytest
import torch

from simworld.models.reward_model import RewardModel, RewardModelConfig
from simworld.models.tokenizer import frames_to_tensor
from simworld.world_model import WorldModel, WorldModelConfig

SMALL = {"channels": [16, 32], "hidden": 32}


def synthetic(n, gen):
    """Latents where a bright spot in the new frame pays 1 and a bright bottom row ends the episode."""
    prev = torch.randn(n, 4, 8, 8, generator=gen) * 0.1
    latent = torch.randn(n, 4, 8, 8, generator=gen) * 0.1
    rewards = (torch.rand(n, generator=gen) < 0.3).float()
    terminated = torch.rand(n, generator=gen) < 0.3
    latent[rewards.bool(), 0, 3, 3] += 3.0
    latent[terminated, 1, -1, :] += 3.0
    return prev, latent, torch.randint(0, 3, (n,), generator=gen), rewards, terminated


def test_reward_model_learns_rewards_and_terminations_from_the_new_frame():
    torch.manual_seed(0)
    model = RewardModel(RewardModelConfig(latent_channels=4, reward_values=[0.0, 1.0], **SMALL))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        r_loss, t_loss = model.loss(*synthetic(64, gen))
        opt.zero_grad()
        (r_loss + t_loss).backward()
        opt.step()
    prev, latent, actions, rewards, terminated = synthetic(256, gen)
    with torch.no_grad():
        reward, prob = model.eval().predict(prev, latent, actions)
    assert ((reward > 0.5) == rewards.bool()).float().mean() > 0.95
    assert ((prob > 0.5) == terminated).float().mean() > 0.95
    assert reward.min() >= 0.0 and reward.max() <= 1.0  # an expectation over the reward classes


def test_single_reward_value_and_continuous_rewards():
    gen = torch.Generator().manual_seed(0)
    prev, latent, actions, rewards, terminated = synthetic(5, gen)
    constant = RewardModel(RewardModelConfig(latent_channels=4, reward_values=[1.0], **SMALL))
    reward, _ = constant.predict(prev, latent, actions)
    np.testing.assert_allclose(reward.detach().numpy(), 1.0)  # CartPole: every step pays 1
    regress = RewardModel(
        RewardModelConfig(latent_channels=4, action_space={"type": "Box", "shape": [2]}, **SMALL)
    )
    reward, prob = regress.predict(prev, latent, torch.zeros(5, 2))
    assert reward.shape == prob.shape == (5,)
    r_loss, _ = regress.loss(prev, latent, torch.zeros(5, 2), rewards * 0.37, terminated)
    assert torch.isfinite(r_loss)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        dynamics={"size": "tiny", "context": 4}, reward_values=[0.0, 1.0], reward_model=SMALL
    )
    m = WorldModel(cfg)
    with torch.no_grad():
        for p in m.reward_model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def context(b, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (b, 3, 64, 64, 3), dtype=np.uint8), rng.integers(0, 3, (b, 2))


def test_rollouts_read_the_reward_model_on_consecutive_latents(model, tmp_path):
    frames, actions = context(2, 0)
    state = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
    first = state.last.clone()
    with torch.no_grad():
        torch.testing.assert_close(
            first, model.encode(frames_to_tensor(torch.as_tensor(frames[:, -1:])))[:, 0]
        )
        _, latent, reward, prob = model.step(state, np.array([0, 2]))
        want_r, want_p = model.reward_model.predict(first, latent, torch.tensor([0, 2]))
    np.testing.assert_allclose(reward, want_r.numpy(), atol=1e-5)
    np.testing.assert_allclose(prob, want_p.numpy(), atol=1e-5)
    assert torch.equal(state.last, latent)
    # the reward model travels with the checkpoint
    model.save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(tmp_path / "m")
    assert loaded.cfg.reward_model == SMALL
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_masked_reset_restarts_only_the_reward_models_context_it_names(model):
    frames, actions = context(3, 1)
    state = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
    model.step(state, np.array([0, 1, 2]))
    before = state.last.clone()
    new_frames, new_actions = context(1, 2)
    model.reset(new_frames, new_actions, state=state, mask=np.array([False, True, False]))
    assert torch.equal(state.last[[0, 2]], before[[0, 2]])
    assert not torch.equal(state.last[1], before[1])


def test_likeliest_rewards_pay_only_the_steps_the_model_is_sure_of():
    """reward_mode="likeliest" pays the most probable class (nothing for a p = 0.3 bounce), the
    expectation pays 0.3 on every step: what an agent in the dream is paid."""
    from envs.dream import DreamVectorEnv

    torch.manual_seed(0)
    m = WorldModel(
        WorldModelConfig(
            dynamics={"size": "tiny", "context": 4}, reward_values=[0.0, 1.0], reward_model=SMALL
        )
    ).eval()
    frames, actions = context(1, 3)
    with torch.no_grad():  # never ends
        m.reward_model.term_head.weight.zero_()
        m.reward_model.term_head.bias.fill_(-10.0)
    for p_bounce, likeliest in [(0.3, 0.0), (0.8, 1.0)]:
        with torch.no_grad():
            m.reward_model.reward_head.weight.zero_()
            m.reward_model.reward_head.bias.copy_(torch.tensor([0.0, np.log(p_bounce / (1 - p_bounce))]))
        for mode, want in [("expected", p_bounce), ("likeliest", likeliest)]:
            envs = DreamVectorEnv(2, m, max_episode_steps=None, reward_mode=mode)
            envs.reset(seed=0, options={"frames": frames[0], "actions": actions[0]})
            rewards = [envs.step(np.array([0, 2]))[1] for _ in range(3)]
            np.testing.assert_allclose(rewards, want, atol=1e-5, err_msg=mode)
    with pytest.raises(ValueError, match="reward_mode"):
        DreamVectorEnv(1, m, reward_mode="argmax")
