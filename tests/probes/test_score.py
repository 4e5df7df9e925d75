"""Scoring video files with sidecars and checkpoints; bad inputs get clear errors."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from simworld.data.video import write_video
from simworld.probes.cli import probe
from simworld.probes.score import load_sidecar, score_file, write_sidecar
from simworld.probes.violations import make_balls
from simworld.probes.world import WorldSpec


@pytest.fixture(scope="module")
def spec():
    return WorldSpec.from_env(make_balls())


def _write(tmp_path, name, frames, spec, **sidecar):
    path = write_video(tmp_path / name, frames, 15, pix_fmt="yuv444p", crf=0)
    write_sidecar(path.with_suffix(".json"), spec, **sidecar)
    return path


def test_video_with_sidecar_and_reference(tmp_path, balls_clip, spec):
    ref = write_video(tmp_path / "truth.mp4", balls_clip.frames, 15, pix_fmt="yuv444p", crf=0)
    video = _write(tmp_path, "clip.mp4", balls_clip.frames, spec, actions=balls_clip.actions,
                   states=balls_clip.states, reference="truth.mp4")  # fmt: skip
    res = score_file(video)
    assert res["frames"] == 48 and res["warnings"] == []
    assert res["tracker_error"] < 0.01  # lossless: the tracker reads the true centres to ~0.05 px
    assert res["scores"]["gravity_error"] < 0.02 and res["scores"]["ade"] < 1e-6
    assert res["reference"]["video"] == str(ref.resolve())


def test_subsampled_video_is_flagged(tmp_path, balls_clip, spec):
    path = write_video(tmp_path / "lossy.mp4", balls_clip.frames, 15)
    write_sidecar(path.with_suffix(".json"), spec)
    assert "chroma subsampling" in score_file(path)["warnings"][0]


def test_bad_inputs_get_clear_errors(tmp_path, balls_clip, spec):
    small = write_video(tmp_path / "small.mp4", balls_clip.frames[:, ::2, ::2], 15, pix_fmt="yuv444p", crf=0)
    write_sidecar(small.with_suffix(".json"), spec)
    with pytest.raises(ValueError, match=r"32x32 \(H x W\) but the world renders 64x64"):
        score_file(small)
    video = _write(tmp_path, "short.mp4", balls_clip.frames, spec, states=balls_clip.states[:-1])
    with pytest.raises(ValueError, match="has 47 entries but the video has 48 frames"):
        score_file(video)
    video = _write(tmp_path, "acts.mp4", balls_clip.frames, spec, actions=balls_clip.actions[:10])
    with pytest.raises(ValueError, match="T - 1 = 47 actions"):
        score_file(video)
    with pytest.raises(ValueError, match="no sidecar"):
        score_file(write_video(tmp_path / "bare.mp4", balls_clip.frames, 15))
    (tmp_path / "bad.json").write_text(json.dumps({"actions": []}))
    with pytest.raises(ValueError, match="names no world"):
        load_sidecar(tmp_path / "bad.json", 48)


def test_sidecar_by_world_id(tmp_path):
    (tmp_path / "w.json").write_text(
        json.dumps({"world_id": "simworld/Balls-v0", "world_params": {"gravity": 3.0}})
    )
    side = load_sidecar(tmp_path / "w.json", 10)
    assert side.spec.gravity == 3.0 and side.spec.names[-1] == "paddle"


def test_probe_command_on_a_checkpoint(checkpoint, tmp_path):
    cfg = OmegaConf.load("configs/probe.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.update({"checkpoint": str(checkpoint), "rollouts": 1, "steps": 6, "responsiveness_steps": 3,
                "videos": 1, "out": str(tmp_path / "report")})  # fmt: skip
    del cfg.splits["id"]  # one split keeps the test short; `ood` also checks the overrides
    res = probe(cfg)
    s = res["splits"]["ood"]
    assert {"dream", "real", "tokenizer", "responsiveness", "horizon"} <= set(s)
    assert s["tokenizer"]["psnr"] == 100.0  # the identity tokenizer is lossless: its floor is the truth
    assert s["responsiveness"]["real"]["responsiveness"] > 0.99
    assert len(s["horizon"]["position"]) == 7
    assert s["spec"]["world_params"]["radius_range"] == [0.25, 0.35]
    page = (tmp_path / "report" / "index.html").read_text()
    assert (
        "<table>" in page
        and "ood_rollout0.mp4" in page
        and (tmp_path / "report" / "ood_rollout0.mp4").exists()
    )
    assert json.loads((tmp_path / "report" / "report.json").read_text())["world_id"] == "simworld/Balls-v0"


def test_probe_rejects_an_unknown_sampler_before_rolling_out(checkpoint, tmp_path):
    cfg = OmegaConf.load("configs/probe.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.update({"checkpoint": str(checkpoint), "sampler": "ddim", "out": str(tmp_path / "report")})
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        probe(cfg)
    assert not (tmp_path / "report" / "report.json").exists()


def test_probe_command_on_a_video(tmp_path, balls_clip, spec):
    video = _write(tmp_path, "clip.mp4", balls_clip.frames, spec)
    cfg = OmegaConf.load("configs/probe.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.update({"video": str(video), "out": str(tmp_path / "vreport")})
    res = probe(cfg)
    assert res["scores"]["permanence"] == 1.0
    assert (tmp_path / "vreport" / "index.html").exists() and (tmp_path / "vreport" / "video.mp4").exists()
    assert np.isfinite(res["scores"]["gravity_error"])


def test_simworld_probe_through_hydra(tmp_path, balls_clip, spec, monkeypatch):
    from simworld import cli

    # the line the `simworld` CLI registers the command with
    monkeypatch.setitem(cli.COMMANDS, "probe", ("simworld.probes.cli:probe", "physics probes"))
    video = _write(tmp_path, "clip.mp4", balls_clip.frames, spec)
    assert cli.main(["probe", f"video={video}", f"out={tmp_path / 'hydra'}"]) == 0
    assert json.loads((tmp_path / "hydra" / "report.json").read_text())["scores"]["permanence"] == 1.0
