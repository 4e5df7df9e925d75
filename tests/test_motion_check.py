import json

import numpy as np

from simworld.motion_check import MotionCheckConfig, draw_clips, run_motion_check, score


def test_clips_move_at_constant_velocity_and_bounce_inside_the_frame():
    cfg = MotionCheckConfig(speeds=[3])
    clips = draw_clips(8, 40, cfg, np.random.default_rng(0))
    assert clips.shape == (8, 40, 64, 64, 3) and clips.dtype == np.uint8
    lit = clips.max(-1) > 0  # (n, t, 64, 64)
    assert (lit.sum((2, 3)) == cfg.square**2).all()  # the whole square is in every frame
    ys = np.array([[np.argwhere(f)[:, 0].min() for f in clip] for clip in lit])
    steps = np.abs(np.diff(ys, axis=1))
    assert (steps <= 3).all() and (steps == 3).mean() > 0.8  # 3 px a frame, less only at a bounce


def test_a_perfect_prediction_scores_zero_and_copying_scores_the_baseline():
    clips = draw_clips(4, 3, MotionCheckConfig(), np.random.default_rng(1))
    perfect = score(clips[:, -1], clips)
    assert perfect["mse"] == 0 and perfect["visible"] == 1 and perfect["centroid_error_px"] == 0
    copied = score(clips[:, -2], clips)
    assert copied["mse"] == copied["mse_copy_last"] > 0 and copied["centroid_error_px"] >= 2
    blank = score(np.zeros_like(clips[:, -1]), clips)
    assert blank["visible"] == 0 and blank["brightness"] == 0


def test_motion_check_runs_end_to_end_and_writes_its_report(tmp_path):
    cfg = MotionCheckConfig(
        dynamics={"size": "tiny", "context": 4, "local_layers": 1, "local_channels": 8, "prev_frames": 2},
        steps=2,
        window=4,
        eval_every=1,
        eval_clips=3,
        reference=True,
        progress=False,
        out=str(tmp_path),
    )
    run_motion_check(cfg)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["step"] for r in report["world_model"]] == [1, 2]
    assert [r["step"] for r in report["reference"]] == [1, 2]
    assert report["world_model"][0]["mse_copy_last"] > 0
    assert (tmp_path / "filmstrip.png").stat().st_size > 0
