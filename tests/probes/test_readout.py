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
