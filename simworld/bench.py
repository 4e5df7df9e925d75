"""``simworld bench``: throughput numbers printed as a table and written as JSON.

Data side: the ground-truth world's steps/s, the episode store's bytes per frame and window reads,
video round-trip quality. Model side (:mod:`simworld.perf`): imagined steps/s of the batched dream,
per-step latency with and without the KV cache, FLOP/s against the matmul peak, peak memory per
sub-environment, training throughput of the tokenizer and the dynamics.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from simworld.checkpoint import atomic_write_text
from simworld.data.collect import CollectConfig, collect, sample_action
from simworld.data.spaces import space_to_spec
from simworld.data.store import EpisodeStore
from simworld.data.video import psnr, read_video, write_video
from simworld.data.windows import WindowDataset, measure_store
from simworld.dream import shipped_checkpoint
from simworld.models.dit import set_attention_impl
from simworld.train.common import resolve_device
from simworld.world_model import WorldModel, WorldModelConfig
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
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() or abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def machine(device: torch.device) -> dict[str, Any]:
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def bench_model(cfg: dict[str, Any], device: torch.device) -> tuple[WorldModel, str]:
    """The model to measure: ``checkpoint``, else the shipped one; ``quick`` builds a tiny random one."""
    if cfg.get("checkpoint"):
        return WorldModel.from_pretrained(cfg["checkpoint"], device=device), str(cfg["checkpoint"])
    if cfg.get("quick"):
        world = WorldConfig(**cfg["world"])
        env = make_world(world)
        h, w = env.observation_space.shape[:2]
        mcfg = WorldModelConfig(
            world_id=world.id,
            frame_size=(h, w),
            action_space=space_to_spec(env.action_space),
            dynamics={"size": "tiny", "patch_size": 2, "context": 4},
            diffusion={"steps": 1},
        )
        env.close()
        torch.manual_seed(0)
        return WorldModel(mcfg).to(device).eval(), "tiny (random weights, --quick)"
    path = shipped_checkpoint()
    return WorldModel.from_pretrained(path, device=device), f"shipped ({path.name})"


def start_context(model: WorldModel, store: EpisodeStore, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Context windows to start dreams from: the model's bank, else windows of the benchmark's store."""
    bank = getattr(model, "start_bank", None)
    if bank is not None:
        return {"frames": bank["frames"][:n], "actions": bank["actions"][:n]}
    t0 = min(3, model.context)
    ds = WindowDataset(store, t0)
    rng = np.random.default_rng(seed)
    items = [ds[int(i)] for i in rng.integers(0, len(ds), size=n)]
    return {
        "frames": np.stack([it["frames"] for it in items]),
        "actions": np.stack([it["actions"] for it in items]),
    }


def model_summary(model: WorldModel) -> dict[str, Any]:
    d = model.dynamics.cfg
    grid = [s // d.patch_size for s in model.latent_size]
    state = model.new_state(1)
    return {
        "dynamics_params": sum(p.numel() for p in model.dynamics.parameters()),
        "size": d.size,
        "attention": d.attention,
        "tokens_per_frame": grid[0] * grid[1],
        "context_frames": d.context,
        "denoising_steps": model.diffusion.steps,
        "sampler": model.diffusion.sampler,
        "kv_cache_bytes_per_env": state.cache.nbytes(),
    }


SECTIONS = ("memory", "dream", "latency", "flops", "train", "decode")


def run_model_bench(cfg: dict[str, Any], store: EpisodeStore, device: torch.device) -> dict[str, Any]:
    quick = bool(cfg.get("quick"))
    seconds = 0.2 if quick else float(cfg["seconds"])
    model, label = bench_model(cfg, device)
    context = start_context(model, store)
    sections = set(cfg.get("sections") or SECTIONS)
    if sections - set(SECTIONS):
        raise ValueError(f"unknown bench sections {sorted(sections - set(SECTIONS))}; choose from {SECTIONS}")
    precision = cfg.get("precision", "fp32")
    set_attention_impl(cfg.get("attention_impl", "sdpa"))
    settings = {"precision": precision, "attention_impl": cfg.get("attention_impl", "sdpa")}
    settings["compile"] = bool(cfg.get("compile"))
    if settings["compile"]:  # each transformer block compiled (the cache bookkeeping stays eager)
        for block in model.dynamics.blocks:
            block.forward = torch.compile(block.forward, dynamic=False)
    out: dict[str, Any] = {"model": {"checkpoint": label, **model_summary(model)}, "settings": settings}

    if "memory" in sections:
        out["memory"] = _memory(cfg, model, context, device)
    if "dream" in sections:
        out["dream"] = _dream(cfg, model, context, seconds, precision)
    if "latency" in sections:
        out.update(_latency(cfg, model, context, precision))
    if "flops" in sections:
        out["flops"] = _flops(cfg, model, context, seconds, device, out.get("dream"), precision)
    if "train" in sections:
        out["train"] = _train(cfg, model, seconds)
    if "decode" in sections:
        out["decode"] = _decode(cfg, model, seconds)
    set_attention_impl("sdpa")
    return out


def _memory(cfg: dict[str, Any], model: WorldModel, context: dict, device: torch.device) -> dict[str, Any]:
    from simworld.perf import env_peak_memory

    print("  peak memory (fresh processes) ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = cfg.get("checkpoint") or model.save_pretrained(Path(tmp) / "model")
        peaks = {int(b): env_peak_memory(path, device, int(b), "rgb", context) for b in cfg["memory_batches"]}
    lo, hi = min(peaks), max(peaks)
    slope = None if None in (peaks[lo], peaks[hi]) or hi == lo else (peaks[hi] - peaks[lo]) / (hi - lo)
    return {
        "peak_mib_by_batch": {str(b): None if v is None else v / 2**20 for b, v in peaks.items()},
        "peak_mib_per_env": None if slope is None else slope / 2**20,
        "kv_cache_mib_per_env": model.new_state(1).cache.nbytes() / 2**20,
    }


def _dream(cfg: dict[str, Any], model: WorldModel, context: dict, seconds: float, precision: str) -> dict:
    from simworld.perf import dream_throughput

    dream: dict[str, dict[str, Any]] = {}
    for obs_mode in ("rgb", "latent"):
        for batch in cfg["batches"]:
            print(f"  dream {obs_mode} batch {batch} ...", flush=True)
            dream.setdefault(obs_mode, {})[str(batch)] = dream_throughput(
                model, batch, obs_mode, seconds, context, precision=precision
            )
    return dream


def _latency(cfg: dict[str, Any], model: WorldModel, context: dict, precision: str) -> dict[str, Any]:
    from simworld.perf import step_latency

    quick = bool(cfg.get("quick"))
    at = [int(s) for s in (cfg["quick_latency_at"] if quick else cfg["latency_at"])]
    samples = 3 if quick else int(cfg["latency_samples"])
    threads = torch.get_num_threads()
    if cfg.get("latency_threads"):  # a batch-1 step is too small to share out; one thread is steadier
        torch.set_num_threads(int(cfg["latency_threads"]))
    show = None if cfg.get("progress", True) else True  # None: a bar on terminals only
    with tqdm(total=max(at), desc="latency rollout", unit="step", disable=show) as bar:
        latency = step_latency(model, at, samples, context, precision=precision, progress=bar.update)
    torch.set_num_threads(threads)
    lat = [v["cached_min_ms"] for v in latency.values()]  # cost, not the machine's noise
    return {
        "latency_ms": latency,
        "latency_cached_spread": (max(lat) - min(lat)) / min(lat),
        "latency_threads": int(cfg.get("latency_threads") or threads),
    }


def _flops(
    cfg: dict[str, Any],
    model: WorldModel,
    context: dict,
    seconds: float,
    device: torch.device,
    dream: dict | None,
    precision: str,
) -> dict[str, Any]:
    from simworld.perf import dream_throughput, matmul_peak, step_flops

    quick = bool(cfg.get("quick"))
    fb = int(cfg["flops_batch"])
    flops = step_flops(model, fb, context)
    size = 512 if quick else int(cfg["matmul_size"])
    out = {"batch": fb, "per_batch_step": flops}
    for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_peak(device, dtype, size, seconds)
        if p == precision and dream is not None and str(fb) in dream["latent"]:
            run = dream["latent"][str(fb)]
        else:
            run = dream_throughput(model, fb, "latent", seconds, context, precision=p)
        achieved = flops / (run["ms_per_batch_step"] / 1e3)
        out[p] = {
            "matmul_peak_flops": peak,
            "achieved_flops": achieved,
            "fraction_of_peak": achieved / peak,
            "steps_per_s": run["steps_per_s"],
        }
    return out


def _train(cfg: dict[str, Any], model: WorldModel, seconds: float) -> dict[str, Any]:
    from simworld.perf import train_throughput

    quick = bool(cfg.get("quick"))
    tb, tw = int(cfg["train_batch"]), int(cfg["train_window"])
    h, w = model.cfg.frame_size
    rng = np.random.default_rng(0)
    n_actions = model.action_space.n if model.discrete else None
    actions = (
        rng.integers(0, n_actions, (tb, tw - 1))
        if n_actions
        else rng.uniform(-1, 1, (tb, tw - 1, *model.action_space.shape)).astype(np.float32)
    )
    batch = {
        "frames": torch.as_tensor(rng.integers(0, 256, (tb, tw, h, w, 3), dtype=np.uint8)),
        "actions": torch.as_tensor(actions),
        "rewards": torch.zeros(tb, tw - 1),
        "terminated": torch.zeros(tb, tw - 1, dtype=torch.bool),
    }
    dyn = copy.deepcopy(model)
    out = {"dynamics_frames_per_s": train_throughput(dyn, batch, seconds), "dynamics_batch": [tb, tw]}
    del dyn
    from simworld.models.vae import VAE, VAE_CONFIGS

    vae = VAE(VAE_CONFIGS["tiny" if quick else cfg["tokenizer_preset"]](frame_size=(h, w))).to(model.device)
    frames = {"frames": torch.as_tensor(rng.integers(0, 256, (tb, 1, h, w, 3), dtype=np.uint8))}
    out["tokenizer_frames_per_s"] = train_throughput(vae, frames, seconds)
    out["tokenizer"] = "tiny" if quick else cfg["tokenizer_preset"]
    return out


def _decode(cfg: dict[str, Any], model: WorldModel, seconds: float) -> dict[str, Any]:
    """A VAE decoder's frames/s in NCHW vs channels-last layout (the shipped model decodes by reshaping)."""
    from simworld.models.vae import VAE, VAE_CONFIGS
    from simworld.perf import decode_throughput

    preset = "tiny" if cfg.get("quick") else cfg["tokenizer_preset"]
    vae = VAE(VAE_CONFIGS[preset](frame_size=tuple(model.cfg.frame_size))).to(model.device)
    shape = (vae.cfg.latent_channels, *vae.cfg.latent_size)
    b = int(cfg["flops_batch"])
    return {
        "tokenizer": preset,
        "batch": b,
        "frames_per_s": {
            layout: decode_throughput(vae.decoder, shape, b, seconds, layout == "channels_last")
            for layout in ("contiguous", "channels_last")
        },
    }


def _rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("world steps/s (1 env, random actions, render incl.)", f"{results['world_steps_per_s']:.0f}")]
    if "model" in results:
        m, st = results["model"], results["settings"]
        rows.append(
            (
                "model",
                f"{m['checkpoint']}: {m['dynamics_params'] / 1e6:.2f}M params, {m['attention']}, "
                f"{m['tokens_per_frame']} tokens/frame, context {m['context_frames']}, "
                f"{m['denoising_steps']} denoising step(s)",
            )
        )
        rows.append(("settings", ", ".join(f"{k}={v}" for k, v in st.items())))
    for mode, by_batch in results.get("dream", {}).items():
        for b, r in by_batch.items():
            rows.append(
                (
                    f"dream {mode:<6} batch {b:>3}: imagined steps/s (ms per batch step)",
                    f"{r['steps_per_s']:.0f} ({r['ms_per_batch_step']:.1f})",
                )
            )
    if "memory" in results:
        mem = results["memory"]
        for b, v in mem["peak_mib_by_batch"].items():
            rows.append((f"peak memory, batch {b:>3} (MiB above the loaded model)", _fmt(v)))
        rows.append(
            (
                "peak memory per sub-env (MiB) | of which KV cache",
                f"{_fmt(mem['peak_mib_per_env'])} | {mem['kv_cache_mib_per_env']:.3f}",
            )
        )
    for s, r in results.get("latency_ms", {}).items():
        rows.append(
            (
                f"latency at step {s:>5}: ms/step cached | without cache, median (min)",
                f"{r['cached_ms']:.2f} ({r['cached_min_ms']:.2f}) | {r['uncached_ms']:.2f} ({r['uncached_min_ms']:.2f})",
            )
        )
    if "latency_threads" in results:
        rows.append(("latency measured with torch threads", str(results["latency_threads"])))
    if "latency_cached_spread" in results:
        rows.append(
            (
                "cached latency spread over steps (of the per-step minima)",
                f"{100 * results['latency_cached_spread']:.1f} %",
            )
        )
    if "flops" in results:
        f = results["flops"]
        rows.append((f"FLOPs per batch step (batch {f['batch']})", f"{f['per_batch_step'] / 1e9:.3f} G"))
        for p in ("fp32", "bf16"):
            r = f[p]
            rows.append(
                (
                    f"{p}: achieved / matmul peak GFLOP/s",
                    f"{r['achieved_flops'] / 1e9:.1f} / {r['matmul_peak_flops'] / 1e9:.1f} "
                    f"= {100 * r['fraction_of_peak']:.1f} % ({r['steps_per_s']:.0f} steps/s)",
                )
            )
    if "train" in results:
        t = results["train"]
        rows.append(
            (f"train dynamics frames/s (batch {t['dynamics_batch']})", f"{t['dynamics_frames_per_s']:.0f}")
        )
        rows.append((f"train tokenizer frames/s ({t['tokenizer']})", f"{t['tokenizer_frames_per_s']:.0f}"))
    if "decode" in results:
        d = results["decode"]
        fps = d["frames_per_s"]
        rows.append(
            (
                f"VAE decode frames/s ({d['tokenizer']}, batch {d['batch']}): NCHW | channels-last",
                f"{fps['contiguous']:.0f} | {fps['channels_last']:.0f}",
            )
        )
    rows += [(f"store {k}", _fmt(v)) for k, v in results.get("store", {}).items()]
    rows += [(f"video {k}", f"{v:.1f}") for k, v in results.get("video", {}).items()]
    return rows


def run_bench(cfg: dict[str, Any]) -> dict[str, Any]:
    device = resolve_device(cfg.get("device", "cpu"))
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    world = WorldConfig(**cfg["world"])
    quick = bool(cfg.get("quick"))
    steps = 200 if quick else int(cfg["world_steps"])
    n_windows = 200 if quick else int(cfg["windows"])
    results: dict[str, Any] = {"machine": machine(device), "world": world.id, "quick": quick}
    print("world steps ...", flush=True)
    results["world_steps_per_s"] = world_steps_per_second(world, steps)
    with tempfile.TemporaryDirectory() as tmp:
        store_path = cfg.get("store")
        if store_path is None:
            store_path = str(Path(tmp) / "store")
            episodes = 3 if quick else int(cfg["episodes"])
            collect(CollectConfig(world=world, out=store_path, episodes=episodes, workers=1, progress=False))
        store = EpisodeStore(store_path)
        print("store and video ...", flush=True)
        results["store"] = {"path": cfg.get("store") or "(temporary)", "episodes": len(store)}
        results["store"].update(measure_store(store, window_length=int(cfg["window"]), n=n_windows))
        results["video"] = video_round_trip(store, Path(tmp))
        if cfg.get("model", True):
            print("model ...", flush=True)
            results.update(run_model_bench(cfg, store, device))
    rows = _rows(results)
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if cfg.get("out"):
        atomic_write_text(cfg["out"], json.dumps(results, indent=2))
        print(f"wrote {cfg['out']}")
    return results
