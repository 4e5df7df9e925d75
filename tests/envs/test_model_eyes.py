import gymnasium as gym
import numpy as np
import pytest

from envs.model_eyes import ModelEyes
from simworld.world_model import WorldModel


def test_model_eyes_shows_the_models_frames_and_keeps_the_worlds_rewards_and_ends(checkpoint):
    model = WorldModel.from_pretrained(checkpoint)
    plain, eyes = gym.make("simworld/Balls-v0"), ModelEyes(gym.make("simworld/Balls-v0"), model)
    obs_p, _ = plain.reset(seed=3)
    obs_e, _ = eyes.reset(seed=3)
    assert np.array_equal(obs_p, obs_e)  # nothing to predict the first frame from: the world's
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(12):
        a = int(rng.integers(plain.action_space.n))
        obs_p, r_p, term_p, trunc_p, _ = plain.step(a)
        obs_e, r_e, term_e, trunc_e, info = eyes.step(a)
        assert (r_e, term_e, trunc_e) == (r_p, term_p, trunc_p)  # the world's dynamics, untouched
        assert np.array_equal(info["real_frame"], obs_p)
        assert obs_e.shape == obs_p.shape and obs_e.dtype == np.uint8
        differ += not np.array_equal(obs_e, obs_p)
        if term_p or trunc_p:
            break
    assert differ > 0  # the policy saw the model's drawings, not the world's frames


def test_model_eyes_refuses_a_world_the_model_was_not_trained_on(checkpoint):
    with pytest.raises(ValueError, match="model"):
        ModelEyes(gym.make("simworld/PixelCartPole-v1"), WorldModel.from_pretrained(checkpoint))


def test_agent_eval_with_eyes_records_them(checkpoint, tmp_path):
    from agents.train import evaluate_agent

    result = evaluate_agent("random", episodes=1, seed=0, eyes=str(checkpoint))
    assert result["eyes"] == str(checkpoint) and result["episodes"] == 1
