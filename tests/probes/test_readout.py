"""The learned state readout: trains on real (frames, state) pairs and reports its floor."""

import numpy as np
import torch

from simworld.probes.readout import ReadoutConfig, collect, load_readout, predict, save_readout, train_readout


def test_cartpole_readout_trains_reports_its_floor_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    episodes = collect("simworld/PixelCartPole-v1", episodes=5, steps=24, seed=0, frame_size=(32, 32))
    model, rep = train_readout(episodes, ReadoutConfig(epochs=4, width=8, batch=32))
    floor = rep["floor"]
    assert len(floor["rmse"]) == 4 and np.isfinite(floor["rmse_mean"]) and floor["pairs"] > 0
    states = predict(model, episodes[0]["frames"])
    assert states.shape == (len(episodes[0]["frames"]) - 1, 4)
    back, meta = load_readout(
        save_readout(model, ReadoutConfig(width=8, context=2), tmp_path / "readout", (32, 32), floor)
    )
    np.testing.assert_allclose(predict(back, episodes[0]["frames"]), states, atol=1e-5)
    assert meta["floor"]["rmse_mean"] == floor["rmse_mean"]


def test_a_readout_learns_from_an_episode_store_with_its_recorded_states(tmp_path):
    """A store's frames and states (e.g. a loop's) feed a readout as freshly collected ones do."""
    import pytest

    from simworld.data.collect import CollectConfig
    from simworld.data.collect import collect as collect_store
    from simworld.probes.readout import store_episodes
    from simworld.worlds import WorldConfig

    world = WorldConfig(name="cartpole", id="simworld/PixelCartPole-v1", kwargs={"frame_size": (32, 32)})
    out = tmp_path / "store"
    collect_store(
        CollectConfig(world=world, out=str(out), episodes=3, policy="random", workers=1, progress=False)
    )
    episodes = store_episodes(out)
    assert len(episodes) == 3
    for ep in episodes:
        assert len(ep["frames"]) == len(ep["states"]) and ep["states"][0]["obs"].shape == (4,)
    fresh = collect("simworld/PixelCartPole-v1", episodes=1, steps=1, seed=0, frame_size=(32, 32))
    np.testing.assert_array_equal(episodes[0]["frames"][0], fresh[0]["frames"][0])  # seed 0's first frame
    np.testing.assert_allclose(episodes[0]["states"][0]["obs"], fresh[0]["states"][0]["obs"])
    model, rep = train_readout(episodes, ReadoutConfig(epochs=2, width=4, batch=16))
    assert model.dim == 4 and np.isfinite(rep["floor"]["rmse_mean"])
    with pytest.raises(ValueError, match="no state/nope"):
        store_episodes(out, "nope")
    # `simworld train-readout store=...` reads the store's world, whatever world= names, and records it
    from simworld.probes.readout import readout_world, run_train_readout

    balls = {"name": "balls", "id": "simworld/Balls-v0", "kwargs": {}}
    conf = {"readout": {"epochs": 1, "width": 4}, "seed": 0, "progress": False}
    run_train_readout({"world": balls, "store": str(out), "out": str(tmp_path / "ro"), **conf})
    assert readout_world(tmp_path / "ro") == {
        "name": "PixelCartPole-v1",
        "id": "simworld/PixelCartPole-v1",
        "max_episode_steps": None,
        "kwargs": {"frame_size": [32, 32]},
    }


def test_a_readout_controller_acts_on_what_the_readout_reads_per_frame_and_on_stacked_frames(tmp_path):
    """``policy=readout:<folder>``: the world's controller on the state read off the last two frames,
    the same whether it is fed frame by frame (dreams) or SB3's stacked observations (agent eval)."""
    import pytest

    from envs.pixel import cartpole_control
    from simworld.probes.readout import ReadoutController

    torch.set_num_threads(1)
    episodes = collect("simworld/PixelCartPole-v1", episodes=5, steps=24, seed=0, frame_size=(32, 32))
    model, rep = train_readout(episodes, ReadoutConfig(epochs=4, width=8, batch=32))
    frames = episodes[0]["frames"]
    x, x_dot, theta, theta_dot = predict(model, frames).T  # a few epochs read near-constant states:
    model.mean[2] -= float(np.median(theta + 0.5 * theta_dot + 0.02 * x + 0.1 * x_dot))  # centre them
    path = save_readout(model, ReadoutConfig(width=8, context=2), tmp_path / "ro", (32, 32), rep["floor"])
    expected = [cartpole_control(s) for s in predict(model, frames)]
    assert 0 < sum(expected) < len(expected), "the readings should ask for both pushes"

    pol = ReadoutController(path, "simworld/PixelCartPole-v1")
    pol.reset(frames[:1])
    assert [pol(f) for f in frames[1:]] == expected
    stacked = np.stack(  # (n, 4 frames * 3, H, W), oldest first, as VecFrameStack stacks them
        [
            np.concatenate([frames[i + k].transpose(2, 0, 1) for k in (-2, -1, 0, 1)])
            for i in range(2, len(frames) - 1)
        ]
    )
    actions, _ = pol.predict(stacked)
    assert actions.tolist() == expected[2:]
    with pytest.raises(ValueError, match="no state controller for simworld/Balls-v0"):
        ReadoutController(path, "simworld/Balls-v0")
    from agents.train import evaluate_agent
    from simworld.rollout import resolve_policy

    world = {"name": "cartpole", "id": "simworld/PixelCartPole-v1", "kwargs": {"frame_size": [32, 32]}}
    result = evaluate_agent(
        f"readout:{path}", world, episodes=2, seed=0
    )  # `simworld agent eval policy=readout:`
    assert len(result["returns"]) == 2 and result["mean_length"] >= 1
    ctl = resolve_policy(f"readout:{path}", None, "simworld/PixelCartPole-v1")
    assert isinstance(ctl, ReadoutController)
    assert resolve_policy(ctl, None) is ctl  # rollout resolves it again: still a frame policy
    with pytest.raises(ValueError, match="does not record the world it reads"):
        resolve_policy(f"readout:{path}", None)  # saved without its world: the user must name one
    # A readout that records its world runs there when none is named (`simworld agent eval policy=readout:...`)
    named = save_readout(
        model,
        ReadoutConfig(width=8, context=2),
        tmp_path / "ro2",
        (32, 32),
        rep["floor"],
        "simworld/PixelCartPole-v1",
    )
    assert isinstance(resolve_policy(f"readout:{named}", None), ReadoutController)
    alone = evaluate_agent(f"readout:{named}", None, episodes=2, seed=0)
    assert alone["world"] == "simworld/PixelCartPole-v1" and alone["returns"] == result["returns"]
