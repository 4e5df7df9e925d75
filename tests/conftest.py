import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import simworld  # noqa: F401
from simworld.world_model import WorldModel, WorldModelConfig

# pygame (used by classic-control rendering) must never try to open a window in tests.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def bank_from_world(n=6, t0=3, seed=0):
    """A start bank of ``n`` real ``t0``-frame windows of Balls, with the true state of each last frame."""
    env = gym.make("simworld/Balls-v0")
    frames, actions, states = [], [], []
    for i in range(n):
        obs, info = env.reset(seed=seed + i)
        f, a = [obs], []
        for _ in range(t0 - 1):
            act = env.unwrapped.heuristic_action()
            obs, _, _, _, info = env.step(act)
            f.append(obs)
            a.append(act)
        frames.append(np.stack(f))
        actions.append(np.array(a, dtype=np.int64))
        states.append(info["state"])
    bank = {"frames": np.stack(frames), "actions": np.stack(actions)}
    bank.update({f"state/{k}": np.stack([s[k] for s in states]) for k in states[0]})
    return bank


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random-weights Balls world model with a start bank, saved like a trained one."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(dynamics={"size": "tiny", "context": 4}))
    with torch.no_grad():  # random weights everywhere so frames depend on context, actions and noise
        for p in model.dynamics.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.dynamics.term_head[-1].bias.fill_(-4.0)  # rarely terminates
    path = tmp_path_factory.mktemp("ckpt") / "dream"
    model.save_pretrained(path, start_bank=bank_from_world())
    return path


@pytest.fixture(scope="session")
def balls_store(tmp_path_factory):
    """A small real Balls episode store (6 episodes of at most 40 steps)."""
    from simworld.data.collect import CollectConfig, collect
    from simworld.data.store import EpisodeStore
    from simworld.worlds import WorldConfig

    out = tmp_path_factory.mktemp("store") / "balls"
    collect(
        CollectConfig(world=WorldConfig(), out=str(out), episodes=6, workers=1, max_steps=40, progress=False)
    )
    return EpisodeStore(out)
