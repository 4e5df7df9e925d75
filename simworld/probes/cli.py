"""``simworld probe``: physics probes on a world model's dreams or on a video file, as JSON + HTML."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from simworld.probes import report
from simworld.probes.suite import DEFAULT_THRESHOLDS, LAW_PROBES, PROBES
from simworld.probes.tracker import track
from simworld.probes.world import WorldSpec


def _json(x: Any) -> Any:
    """JSON-safe copy: arrays to lists, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _thresholds(path: str | None) -> dict[str, float]:
    if not path:
        return dict(DEFAULT_THRESHOLDS)
    return {k: float(v) for k, v in json.loads(Path(path).read_text()).items() if k in PROBES}


def _checkpoint_report(c: dict[str, Any], out: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    from simworld.dream import shipped_checkpoint
    from simworld.probes.score import score_checkpoint
    from simworld.world_model import WorldModel

    ckpt = c["checkpoint"] or shipped_checkpoint()
    model = WorldModel.from_pretrained(ckpt, c["device"])
    model.set_sampling(c.get("denoise_steps"), c.get("sampler"))
    res = score_checkpoint(
        model,
        rollouts=int(c["rollouts"]),
        steps=int(c["steps"]),
        splits=c["splits"],
        policy=c["policy"],
        seed=int(c["seed"]),
        device=c["device"],
        jitter=float(c["jitter"]),
        responsiveness_steps=int(c["responsiveness_steps"]),
        keep=int(c["videos"]),
    )
    sections = [("What this is", _INTRO)]
    for name, split in res["splits"].items():
        spec = WorldSpec.from_dict(split["spec"])
        trajs = split.pop("trajectories")
        body = f"<p>world overrides: <code>{json.dumps(split['overrides'])}</code></p>"
        body += report.score_table(
            {"dream": split["dream"], "real (floor)": split["real"], "tokenizer (floor)": split["tokenizer"]},
            thresholds,
        )
        if split["responsiveness"]:
            body += "<h3>action responsiveness</h3>" + report.score_table(split["responsiveness"])
        hz = {k: np.array(v, float) for k, v in split["horizon"].items()}
        for key, label in (("position", "position error (units)"), ("velocity", "velocity error (units/s)"),
                           ("psnr", "PSNR (dB)")):  # fmt: skip
            png = report.horizon_plot(
                out / f"{name}_{key}_horizon.png", {"dream vs real": hz[key]}, label, spec.fps
            )
            body += report.img_tag(png.name)
        for i, traj in enumerate(trajs):
            png = report.trajectory_plot(
                out / f"{name}_traj{i}.png", track(traj.frames, spec), track(traj.real_frames, spec),
                f"{name} rollout {i}: dream (solid) vs real (dashed)", spec.fps,
            )  # fmt: skip
            mp4 = traj.to_video(out / f"{name}_rollout{i}.mp4", upscale=4)
            body += report.img_tag(png.name) + report.video_tag(
                mp4.name, f"real | dream | difference, rollout {i}"
            )
        sections.append((f"split: {name}", body))
    report.write_html(out / "index.html", f"physics probes: {ckpt}", sections)
    return {"checkpoint": str(ckpt), "thresholds": thresholds, **res}


def _video_report(c: dict[str, Any], out: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    from simworld.data.video import read_video, write_video
    from simworld.probes.score import score_file

    res = score_file(c["video"], c["sidecar"], c["reference"])
    spec = WorldSpec.from_dict(res["spec"])
    cols = {"video": res["scores"]}
    if res["reference"]:
        cols["reference (floor)"] = res["reference"]["scores"]
    body = report.score_table(cols, thresholds)
    body += (
        f"<p>tracker error against the sidecar's true states: {report._fmt(res['tracker_error'])} units</p>"
    )
    frames, _ = read_video(c["video"])
    ref = read_video(res["reference"]["video"])[0] if res["reference"] else None
    png = report.trajectory_plot(
        out / "trajectories.png", track(frames, spec), None if ref is None else track(ref, spec),
        "tracked objects: video (solid) vs reference (dashed)", spec.fps,
    )  # fmt: skip
    body += report.img_tag(png.name)
    shown = frames if ref is None else np.concatenate([ref, frames], axis=2)
    mp4 = write_video(out / "video.mp4", shown, spec.fps, upscale=4)
    body += report.video_tag(mp4.name, "reference | video" if ref is not None else "video")
    report.write_html(out / "index.html", f"physics probes: {c['video']}", [("scores", body)])
    return {"thresholds": thresholds, **res}


_INTRO = (
    "<p>Each probe is read off pixels by a colour tracker. <b>dream</b>: the world model's rollouts; "
    "<b>real (floor)</b>: the ground-truth run from the same start (comparison probes: against a second "
    "ground-truth run from a start jittered by ~1e-3 units, i.e. the physical variance); <b>tokenizer "
    "(floor)</b>: the ground truth passed through the model's tokenizer. Red cells exceed the threshold "
    "calibrated on real videos. Hover a probe's name for what it checks.</p>"
)


def probe(cfg: DictConfig) -> dict:
    """Score a world-model checkpoint (``video=null``) or a video file with its sidecar.

    Writes ``<out>/report.json`` and ``<out>/index.html`` (tables, plots, videos) and returns the
    report dict.
    """
    c = OmegaConf.to_container(cfg, resolve=True)
    out = Path(c["out"])
    out.mkdir(parents=True, exist_ok=True)
    thresholds = _thresholds(c.get("thresholds"))
    if c.get("video"):
        result = _video_report(c, out, thresholds)
        headline = {k: result["scores"].get(k) for k in LAW_PROBES}
    else:
        result = _checkpoint_report(c, out, thresholds)
        headline = {n: {k: s["dream"].get(k) for k in LAW_PROBES} for n, s in result["splits"].items()}
    (out / "report.json").write_text(json.dumps(_json(result), indent=1))
    print(json.dumps(_json(headline)))
    print(f"wrote {out / 'report.json'} and {out / 'index.html'}")
    return result
