"""``simworld bench``: throughput numbers printed as a table and written as JSON."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simworld.data.collect import CollectConfig, collect, sample_action
from simworld.data.store import EpisodeStore
from simworld.data.video import psnr, read_video, write_video
from simworld.data.windows import measure_store
from simworld.worlds import WorldConfig, make_world


def world_steps_per_second(world: WorldConfig, steps: int, seed: int = 0) -> float:
    """Steps/s of one copy of the ground-truth world under random actions, rendering included."""
    env = make_world(world)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(sample_action(env.action_space, rng))
        if term or trunc:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return steps / seconds


VIDEO_SETTINGS = [(0, "yuv444p"), (10, "yuv444p"), (18, "yuv444p"), (18, "yuv420p")]


def video_round_trip(store: EpisodeStore, tmp: Path, frames: int = 60) -> dict[str, float]:
    """PSNR (dB) of h264-encoded-then-decoded frames of the store's first episode, per (crf, pix_fmt)."""
    src = store.load(store.episode_ids[0]).frames[:frames]
    out = {}
    for crf, pix_fmt in VIDEO_SETTINGS:
        path = write_video(tmp / f"rt_{crf}_{pix_fmt}.mp4", src, fps=store.meta.fps, crf=crf, pix_fmt=pix_fmt)
        out[f"psnr_db crf={crf} {pix_fmt}"] = psnr(read_video(path)[0], src)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() or abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_bench(cfg: dict[str, Any]) -> dict[str, Any]:
    world = WorldConfig(**cfg["world"])
    quick = bool(cfg.get("quick"))
    steps = 200 if quick else int(cfg["world_steps"])
    n_windows = 200 if quick else int(cfg["windows"])
    results: dict[str, Any] = {"machine": machine(), "world": world.id}
    results["world_steps_per_s"] = world_steps_per_second(world, steps)
    with tempfile.TemporaryDirectory() as tmp:
        store_path = cfg.get("store")
        if store_path is None:
            store_path = str(Path(tmp) / "store")
            episodes = 3 if quick else int(cfg["episodes"])
            collect(CollectConfig(world=world, out=store_path, episodes=episodes, workers=1, progress=False))
        store = EpisodeStore(store_path)
        results["store"] = {"path": cfg.get("store") or "(temporary)", "episodes": len(store)}
        results["store"].update(measure_store(store, window_length=int(cfg["window"]), n=n_windows))
        results["video"] = video_round_trip(store, Path(tmp))
    rows = [("world steps/s (1 env, random actions, render incl.)", f"{results['world_steps_per_s']:.0f}")]
    rows += [(f"store {k}", _fmt(v)) for k, v in results["store"].items()]
    rows += [(f"video {k}", f"{v:.1f}") for k, v in results["video"].items()]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if cfg.get("out"):
        Path(cfg["out"]).write_text(json.dumps(results, indent=2))
        print(f"wrote {cfg['out']}")
    return results
