"""Train the VAE tokenizer on single frames of an episode store, with exact resume.

Batches and sampling noise are functions of ``(seed, step)``, and a checkpoint holds the weights,
the AdamW state and the RNG state (safetensors + JSON, written atomically), so a run that is stopped
and resumed ends with the same weights as one that ran straight through.

Output layout::

    <out>/checkpoint/model.safetensors      weights (for resume)
    <out>/checkpoint/trainer.safetensors    optimizer tensors and RNG state
    <out>/checkpoint/state.json             step, optimizer param groups, configs
    <out>/tb/                               TensorBoard scalars
    <out>/tokenizer.safetensors, tokenizer.json   the final tokenizer (see ``load_tokenizer``)
    <out>/eval.json                         reconstruction metrics on the validation episodes
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from simworld.checkpoint import (
    CheckpointError,
    atomic_save_tensors,
    atomic_write_text,
    load_state_strict,
    load_tensors,
    read_json,
    replace_dir,
)
from simworld.data import EpisodeStore, sample_windows
from simworld.metrics import foreground_mask, psnr_masked_uint8, psnr_uint8, ssim_uint8
from simworld.models.tokenizer import frames_to_tensor, tensor_to_frames
from simworld.models.vae import VAE, VAE_CONFIGS, VAEConfig, load_tokenizer, save_tokenizer

__all__ = [
    "TokenizerTrainConfig",
    "evaluate_reconstruction",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
]

_PSNR_CAP = 100.0  # dB given to a perfectly reconstructed frame when averaging (instead of inf)


@dataclass
class TokenizerTrainConfig:
    """Everything :func:`train_tokenizer` needs.

    Attributes:
        store: Episode store directory.
        out: Output directory (checkpoint, TensorBoard logs, final tokenizer, eval.json).
        steps: Optimizer steps.
        batch_size: Frames per step.
        lr: Peak learning rate (AdamW), after ``warmup`` linear steps, then cosine to 0.
        warmup: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Max global gradient norm (0 disables clipping).
        val_fraction: Fraction of episodes held out (``EpisodeStore.split`` with ``seed``).
        eval_every: Steps between validation evaluations (0: only at the end).
        eval_frames: Validation frames scored during training.
        final_eval_frames: Validation frames scored at the end (evenly spaced); None: all of them.
        norm_frames: Training frames used to fit the latent normalisation.
        ckpt_every: Steps between checkpoints (one is also written at the last step).
        log_every: Steps between TensorBoard / progress-bar updates.
        seed: Seeds the initial weights, the split, the batches and the sampling noise.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"fp32"`` or ``"bf16"`` (autocast; weights and optimizer stay fp32).
        resume: Continue from ``<out>/checkpoint`` if there is one. Without it an existing checkpoint
            is an error, so a run is never overwritten by accident.
        num_threads: ``torch.set_num_threads`` for CPU training; None leaves torch's default.
        progress: Show a tqdm progress bar.
        vae: :class:`VAEConfig` fields; ``"preset"`` picks a base from ``VAE_CONFIGS`` (e.g.
            ``"balls-d4"``) that the other fields override. ``frame_size`` defaults to the store's.
    """

    store: str
    out: str
    steps: int = 3000
    batch_size: int = 16
    lr: float = 4e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    eval_every: int = 500
    eval_frames: int = 256
    final_eval_frames: int | None = 2048
    norm_frames: int = 1024
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    resume: bool = False
    num_threads: int | None = None
    progress: bool = True
    vae: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"need steps >= 0 and batch_size >= 1, got {self.steps} and {self.batch_size}")
        self.vae = dict(self.vae)


def build_vae_config(spec: dict[str, Any], frame_size: tuple[int, int]) -> VAEConfig:
    """A :class:`VAEConfig` from a ``TokenizerTrainConfig.vae`` dict (see there)."""
    spec = dict(spec)
    preset = spec.pop("preset", None)
    spec.setdefault("frame_size", tuple(frame_size))
    if tuple(spec["frame_size"]) != tuple(frame_size):
        raise ValueError(
            f"vae.frame_size {tuple(spec['frame_size'])} but the store's frames are {frame_size}"
        )
    if preset is None:
        return VAEConfig(**spec)
    if preset not in VAE_CONFIGS:
        raise ValueError(f"unknown VAE preset {preset!r}; choose one of {list(VAE_CONFIGS)}")
    base = asdict(VAE_CONFIGS[preset]())
    return VAEConfig(**{**base, **spec})


def lr_at(step: int, cfg: TokenizerTrainConfig) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup`` steps, then cosine decay to 0 at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % 2**63


# ---- checkpoint ---------------------------------------------------------------------------------


def _save_checkpoint(
    out: str | Path,
    model: VAE,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TokenizerTrainConfig,
    seconds: float,
) -> None:
    """Write ``<out>/checkpoint`` (weights, AdamW state, RNG state, step) as one atomic directory swap."""
    ckpt_dir = Path(out) / "checkpoint"
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{pid}/{k}"] = v
            else:
                scalars[f"{pid}/{k}"] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    state = {
        "step": step,
        "train_seconds": seconds,
        "param_groups": sd["param_groups"],
        "optim_scalars": scalars,
        "vae": model.cfg.to_dict(),
        "train": asdict(cfg),
    }
    # Written into a fresh sibling directory and swapped in whole: a crash leaves the old checkpoint.
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=ckpt_dir.parent))
    try:
        atomic_save_tensors(tmp / "model.safetensors", model.state_dict())
        atomic_save_tensors(tmp / "trainer.safetensors", tensors)
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=2) + "\n")
        replace_dir(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_checkpoint(ckpt_dir: Path, model: VAE, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Restore what :func:`_save_checkpoint` wrote; returns ``(step, train_seconds)``."""
    state = read_json(ckpt_dir / "state.json")
    try:
        step, groups, scalars, vae = (
            state["step"],
            state["param_groups"],
            state["optim_scalars"],
            state["vae"],
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt_dir / 'state.json'}: missing field {e}") from e
    ignore = ("latent_scale", "latent_shift")
    own = {k: v for k, v in model.cfg.to_dict().items() if k not in ignore}
    saved = {k: v for k, v in vae.items() if k not in ignore}
    if own != saved:
        diffs = [
            f"{k}: checkpoint {saved.get(k)!r} vs config {own.get(k)!r}"
            for k in own
            if own[k] != saved.get(k)
        ]
        raise CheckpointError(
            f"checkpoint {ckpt_dir} was trained with another VAE config: " + "; ".join(diffs)
        )
    load_state_strict(
        model, load_tensors(ckpt_dir / "model.safetensors"), str(ckpt_dir / "model.safetensors")
    )
    tensors = load_tensors(ckpt_dir / "trainer.safetensors")
    opt_state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if name.startswith("optim/"):
            _, pid, k = name.split("/", 2)
            opt_state.setdefault(int(pid), {})[k] = v
    for name, v in scalars.items():
        pid, k = name.split("/", 1)
        opt_state.setdefault(int(pid), {})[k] = v
    try:
        opt.load_state_dict({"state": opt_state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt_dir}: optimizer state does not match the model ({e})") from e
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng/cuda/{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng/cuda/{i}"], i)
    return int(step), float(state.get("train_seconds", 0.0))


# ---- evaluation ---------------------------------------------------------------------------------


def _frame_index(
    store: EpisodeStore, episode_ids: Sequence[int], max_frames: int | None
) -> list[tuple[int, int]]:
    """``(episode, frame)`` pairs of the episodes; evenly spaced ``max_frames`` of them if capped."""
    pairs = [(e, i) for e in episode_ids for i in range(store.num_steps(e) + 1)]
    if max_frames is not None and len(pairs) > max_frames:
        keep = np.linspace(0, len(pairs) - 1, max_frames).round().astype(np.int64)
        pairs = [pairs[i] for i in keep]
    return pairs


def _read_frames(store: EpisodeStore, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.stack([store.read_window(e, i, 1)["frames"][0] for e, i in pairs])  # (n, H, W, 3)


@torch.no_grad()
def reconstruct_uint8(
    model: torch.nn.Module, frames: np.ndarray, batch_size: int = 64, precision: str = "fp32"
) -> np.ndarray:
    """Encode and decode ``uint8 (n, H, W, 3)`` frames one by one (as 1-frame clips), in batches."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[i : i + batch_size], device=device).unsqueeze(1)  # (b, 1, 3, H, W)
        with _autocast(device, precision):
            y = model.decode(model.encode(x))  # (b, 1, 3, H, W)
        out.append(tensor_to_frames(y.float()[:, 0]))
    return np.concatenate(out)  # (n, H, W, 3)


def evaluate_reconstruction(
    model: torch.nn.Module,
    store: EpisodeStore,
    episode_ids: Sequence[int],
    max_frames: int | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
) -> dict[str, float]:
    """Score how well a tokenizer reconstructs the frames of some episodes.

    Args:
        model: A tokenizer (``encode`` / ``decode``) with parameters.
        store: The episode store.
        episode_ids: Episodes to score (usually the validation split).
        max_frames: Score this many evenly spaced frames; None: all.
        batch_size: Frames per forward pass.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``psnr`` (mean over frames of per-frame PSNR in dB, a perfect frame counting as 100),
        ``ssim`` (mean per-frame SSIM), ``psnr_fg`` (PSNR pooled over foreground pixels: those that
        differ from their frame's background colour, grown by one pixel), ``psnr_min`` (worst frame)
        and ``frames``.
    """
    pairs = _frame_index(store, episode_ids, max_frames)
    if not pairs:
        raise ValueError("no frames to evaluate")
    was_training = model.training
    model.eval()
    target = _read_frames(store, pairs)  # (n, H, W, 3)
    recon = reconstruct_uint8(model, target, batch_size, precision)  # (n, H, W, 3)
    model.train(was_training)
    p = np.minimum(psnr_uint8(recon, target), _PSNR_CAP)  # (n,)
    s = ssim_uint8(recon, target)  # (n,)
    return {
        "psnr": float(p.mean()),
        "ssim": float(s.mean()),
        "psnr_fg": psnr_masked_uint8(recon, target, foreground_mask(target)),
        "psnr_min": float(p.min()),
        "frames": float(len(pairs)),
    }


# ---- training -----------------------------------------------------------------------------------


def train_tokenizer(cfg: TokenizerTrainConfig | dict[str, Any]) -> dict[str, float]:
    """Train a VAE tokenizer, save it to ``cfg.out`` and score it on the validation episodes.

    Args:
        cfg: The run's configuration (a dict is turned into a :class:`TokenizerTrainConfig`).

    Returns:
        The metrics also written to ``<out>/eval.json``: those of :func:`evaluate_reconstruction`
        (absent if there are no validation episodes) plus ``step``, ``train_seconds``,
        ``latent_shift`` and ``latent_scale``.

    Raises:
        FileExistsError: If ``<out>/checkpoint`` exists and ``cfg.resume`` is False.
        CheckpointError: If the checkpoint to resume from is corrupt or from another VAE config.
    """
    if isinstance(cfg, dict):
        cfg = TokenizerTrainConfig(**cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    from torch.utils.tensorboard import SummaryWriter  # slow import, only needed here

    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    if ckpt_dir.exists() and not cfg.resume:
        raise FileExistsError(
            f"{ckpt_dir} exists: pass resume=True to continue that run, or pick another out"
        )
    store = EpisodeStore(cfg.store)
    train_ids, val_ids = store.split(cfg.val_fraction, seed=cfg.seed)
    if not train_ids:
        raise ValueError(f"store {store.root} has no training episodes")
    device = torch.device(cfg.device)

    torch.manual_seed(cfg.seed)
    model = VAE(build_vae_config(cfg.vae, store.meta.frame_size)).to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    start, prior_seconds = 0, 0.0
    if cfg.resume and (ckpt_dir / "state.json").exists():
        start, prior_seconds = _load_checkpoint(ckpt_dir, model, opt)
        print(f"resumed from {ckpt_dir} at step {start}")

    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"tokenizer: VAE {n_params / 1e6:.2f}M params, latents {model.cfg.latent_channels}x"
        f"{model.cfg.latent_size[0]}x{model.cfg.latent_size[1]}; {len(train_ids)} train / {len(val_ids)} val "
        f"episodes; {cfg.steps} steps of {cfg.batch_size} frames on {device} ({cfg.precision}, "
        f"{torch.get_num_threads()} threads)"
    )
    writer = SummaryWriter(str(out / "tb"))
    try:
        train_seconds = _train_steps(cfg, model, opt, store, train_ids, val_ids, start, prior_seconds, writer)

        # Latent normalisation from a fixed sample of training frames (raw posterior means).
        model.eval()
        pairs = _frame_index(store, train_ids, None)
        pick = np.random.default_rng([cfg.seed, 7]).permutation(len(pairs))[: cfg.norm_frames]
        frames = _read_frames(store, [pairs[i] for i in sorted(pick)])  # (n, H, W, 3)
        with torch.no_grad(), _autocast(device, cfg.precision):
            means = [
                model.posterior(frames_to_tensor(frames[i : i + 64], device=device).unsqueeze(1))[0].cpu()
                for i in range(0, len(frames), 64)
            ]
        shift, scale = model.fit_latent_normalisation(torch.cat(means))
        save_tokenizer(model, out)

        metrics: dict[str, float] = {}
        if val_ids:
            metrics = evaluate_reconstruction(
                model, store, val_ids, cfg.final_eval_frames, precision=cfg.precision
            )
            for k in ("psnr", "ssim", "psnr_fg"):
                writer.add_scalar(f"eval/{k}", metrics[k], cfg.steps)
    finally:
        writer.close()
    metrics.update(
        {
            "step": float(cfg.steps),
            "train_seconds": train_seconds,
            "latent_shift": shift,
            "latent_scale": scale,
        }
    )
    atomic_write_text(out / "eval.json", json.dumps(metrics, indent=2) + "\n")
    _print_table(metrics, len(val_ids))
    return metrics


def _train_steps(
    cfg: TokenizerTrainConfig,
    model: VAE,
    opt: torch.optim.Optimizer,
    store: EpisodeStore,
    train_ids: list[int],
    val_ids: list[int],
    start: int,
    prior_seconds: float,
    writer: Any,
) -> float:
    """Steps ``start .. cfg.steps - 1``; returns the training seconds so far (over all resumed runs)."""
    device = model.device
    model.train()
    t_start = time.perf_counter()
    t_log, frames_since = t_start, 0
    with tqdm(
        range(start, cfg.steps), initial=start, total=cfg.steps, disable=not cfg.progress, desc="tokenizer"
    ) as bar:
        for step in bar:
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = sample_windows(
                store, 1, cfg.batch_size, np.random.default_rng([cfg.seed, step]), train_ids
            )
            torch.manual_seed(_step_seed(cfg.seed, step))  # the reparameterisation noise
            with _autocast(device, cfg.precision):
                loss, logs = model({"frames": torch.from_numpy(batch["frames"])})  # frames (b, 1, H, W, 3)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                logs["train/grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                )
            opt.step()
            frames_since += cfg.batch_size
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                fps = frames_since / max(time.perf_counter() - t_log, 1e-9)
                t_log, frames_since = time.perf_counter(), 0
                logs.update({"train/lr": lr, "train/frames_per_s": fps})
                for k, v in logs.items():
                    writer.add_scalar(k, v, done)
                bar.set_postfix(
                    loss=f"{logs['train/loss']:.4f}", psnr=f"{logs['train/psnr']:.1f}", fps=f"{fps:.0f}"
                )
            if val_ids and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                m = evaluate_reconstruction(model, store, val_ids, cfg.eval_frames, precision=cfg.precision)
                for k in ("psnr", "ssim", "psnr_fg"):
                    writer.add_scalar(f"eval/{k}", m[k], done)
                bar.write(
                    f"step {done}: val psnr {m['psnr']:.2f} dB, fg {m['psnr_fg']:.2f} dB, ssim {m['ssim']:.4f}"
                )
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                seconds = prior_seconds + time.perf_counter() - t_start
                _save_checkpoint(cfg.out, model, opt, done, cfg, seconds)
    return prior_seconds + time.perf_counter() - t_start


def _print_table(metrics: dict[str, float], val_episodes: int) -> None:
    rows = [
        ("val episodes", f"{val_episodes}"),
        ("val frames", f"{metrics.get('frames', 0):.0f}"),
        ("PSNR (dB)", f"{metrics['psnr']:.2f}" if "psnr" in metrics else "-"),
        ("PSNR fg (dB)", f"{metrics['psnr_fg']:.2f}" if "psnr_fg" in metrics else "-"),
        ("PSNR worst frame", f"{metrics['psnr_min']:.2f}" if "psnr_min" in metrics else "-"),
        ("SSIM", f"{metrics['ssim']:.4f}" if "ssim" in metrics else "-"),
        ("latent shift/scale", f"{metrics['latent_shift']:.3f} / {metrics['latent_scale']:.3f}"),
        ("train time (s)", f"{metrics['train_seconds']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
