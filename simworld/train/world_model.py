"""``simworld train``: fit the dynamics (diffusion transformer + heads) on windows from an episode store."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from simworld.data.store import EpisodeStore
from simworld.data.windows import WindowDataset
from simworld.train.common import (
    autocast,
    batch_for_step,
    check_mirror_actions,
    distributed,
    ema_update,
    mirror_batch,
    resolve_device,
    reward_windows,
    terminal_windows,
    warmup_cosine,
)
from simworld.train.state import load_training_state, save_training_state
from simworld.world_model import WorldModel, WorldModelConfig


@dataclass
class TrainConfig:
    store: str = "data/balls"
    out: str = "runs/balls"
    tokenizer: dict = field(default_factory=lambda: {"kind": "identity", "unshuffle": 4})
    tokenizer_path: str | None = None  # a trained tokenizer directory (overrides `tokenizer`)
    dynamics: dict = field(default_factory=lambda: {"size": "S", "context": 8})
    diffusion: dict = field(default_factory=dict)
    # a separate reward/termination CNN (RewardModelConfig fields; {}: its defaults) that rollouts
    # read; None: the transformer's own heads (see simworld/models/reward_model.py for why)
    reward_model: dict | None = field(default_factory=dict)
    window: int = 8  # frames per training window
    batch_size: int = 16
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    steps: int = 2000
    # the optimiser steps the learning-rate schedule spans (None: ``steps``). A run trained in stages,
    # each resuming the last with more ``steps`` (the agent loop's rounds), gives the total here so
    # the stages follow one schedule instead of each decaying to the floor from wherever it starts
    schedule_steps: int | None = None
    lr: float = 1e-3  # as configs/train.yaml (simworld train) and the loop
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "fp32"  # fp32 | bf16
    device: str = "cpu"  # cpu | cuda | auto
    num_threads: int | None = None
    val_fraction: float = 0.1
    log_every: int = 10
    ckpt_every: int = 200
    terminal_fraction: float = 0.0  # share of windows drawn from those ending in a termination
    reward_fraction: float = 0.0  # share of windows drawn from those ending in a nonzero reward
    bank_size: int = 256  # start-frame bank: real context windows shipped with the model
    bank_frames: int = 3
    # share of the bank's windows that begin at an episode's first frame, where the real world starts
    # its episodes (0: windows uniform over the store, where a poor collecting policy's CartPole
    # windows sit a few steps from the pole falling whatever the agent then does)
    bank_episode_starts: float = 0.0
    # a world whose physics and rendering are mirror-symmetric: the action each action becomes when the
    # frames are flipped left to right (CartPole: [1, 0]); half of each batch is trained on flipped
    mirror_actions: list[int] | None = None
    seed: int = 0
    resume: bool = False
    progress: bool = True


@torch.no_grad()
def latent_normalisation(model: WorldModel, frames) -> tuple[float, float]:
    """Mean and spread of the tokenizer's latents of ``frames`` (uint8 ``(..., H, W, 3)``) ->
    (shift, scale) that bring the latents to the spread ``sigma_data``."""
    from simworld.models.tokenizer import frames_to_tensor

    with torch.no_grad():
        z = model.tokenizer.encode(frames_to_tensor(frames, model.device))
    return float(z.mean()), float(z.std()) / model.diffusion.sigma_data


def latent_stats(model: WorldModel, ds: WindowDataset, seed: int, windows: int = 64) -> tuple[float, float]:
    """:func:`latent_normalisation` on a batch of training windows that no training step draws."""
    return latent_normalisation(model, batch_for_step(ds, windows, seed, step=10**9)["frames"])


def reward_values(store: EpisodeStore, max_values: int = 16) -> list[float] | None:
    """The distinct rewards in ``store``, sorted, or None if there are more than ``max_values`` of them."""
    seen: set[float] = set()
    for eid in store.episode_ids:
        seen.update(np.unique(store.read_array(eid, "rewards")).tolist())
        if len(seen) > max_values:
            return None
    return sorted(float(r) for r in seen) or None


def _model_config(cfg: TrainConfig, store: EpisodeStore) -> WorldModelConfig:
    tokenizer = dict(cfg.tokenizer)
    if cfg.tokenizer_path:
        tokenizer = json.loads((Path(cfg.tokenizer_path) / "tokenizer.json").read_text())
    return WorldModelConfig(
        world_id=store.meta.world_id,
        frame_size=tuple(store.meta.frame_size),
        action_space=store.meta.action_space,
        fps=store.meta.fps,
        world_params=store.meta.world_params,
        tokenizer=tokenizer,
        dynamics=dict(cfg.dynamics),
        diffusion=dict(cfg.diffusion),
        reward_values=reward_values(store),
        reward_model=None if cfg.reward_model is None else dict(cfg.reward_model),
    )


BANK_STATE = "state/"  # a start bank's true-state arrays: state/<key>, one row per window


def bank_state(bank: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """The true state at the last frame of start-bank window ``i`` (empty: the bank has none)."""
    return {k[len(BANK_STATE) :]: bank[k][i] for k in bank if k.startswith(BANK_STATE)}


def start_bank(
    store: EpisodeStore, ids: list[int], size: int, frames: int, seed: int, episode_starts: float = 0.0
) -> dict[str, np.ndarray]:
    """``size`` real context windows (frames + actions between them) to start dreams from; a share
    ``episode_starts`` of them (as far as there are episodes) begin at an episode's first frame."""
    if not 0.0 <= episode_starts <= 1.0:
        raise ValueError(f"bank_episode_starts must be between 0 and 1, got {episode_starts}")
    ds = WindowDataset(store, frames, episode_ids=ids)
    rng = np.random.default_rng([seed, 0xBA4C])
    n = min(size, len(ds))
    firsts = np.flatnonzero(ds.starts == 0)
    k = min(round(episode_starts * n), len(firsts))
    if k == 0:
        pick = rng.choice(len(ds), size=n, replace=False)
    else:
        first = rng.choice(firsts, size=k, replace=False)
        rest = np.setdiff1d(np.arange(len(ds)), first)
        pick = np.concatenate([first, rng.choice(rest, size=n - k, replace=False)])
    items = [ds[int(i)] for i in np.sort(pick)]
    bank = {
        "frames": np.stack([it["frames"] for it in items]),
        "actions": np.stack([it["actions"] for it in items]),
        "episode": np.array([it["episode"] for it in items]),
        "start": np.array([it["start"] for it in items]),
    }
    # the true state at each window's last frame lets the real world start beside the dream
    keys = set.intersection(*(set(it["states"]) for it in items)) if items else set()
    for k in sorted(keys):
        bank[f"{BANK_STATE}{k}"] = np.stack([it["states"][k][-1] for it in items])
    return bank


def train_world_model(cfg: TrainConfig) -> dict[str, Any]:
    """Train, checkpointing every ``ckpt_every`` steps; ``resume=True`` continues from the last checkpoint."""
    rank, world = distributed()
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed + rank)
    if not 0.0 <= cfg.bank_episode_starts <= 1.0:  # checked before hours of training, not after
        raise ValueError(f"bank_episode_starts must be between 0 and 1, got {cfg.bank_episode_starts}")
    if cfg.schedule_steps is not None and cfg.schedule_steps < cfg.steps:
        raise ValueError(
            f"schedule_steps={cfg.schedule_steps} is fewer than steps={cfg.steps}: the learning-rate "
            "schedule would end before training does (give the total of all stages, or null)"
        )
    store = EpisodeStore(cfg.store)
    mirror = check_mirror_actions(cfg.mirror_actions, store.meta.action_space)
    train_ids, val_ids = store.split(cfg.val_fraction, seed=cfg.seed)
    ds = WindowDataset(store, cfg.window, episode_ids=train_ids)
    if len(ds) == 0:
        raise ValueError(f"no training window of {cfg.window} frames in {cfg.store}: collect longer episodes")
    out = Path(cfg.out)
    saved = out / "model_config.json"
    mcfg = _model_config(cfg, store)
    resumed = json.loads(saved.read_text()) if cfg.resume and saved.exists() else None
    if resumed is not None:
        # keep the run's reward classes even if the store has grown new reward values since (the
        # reward model's output layer was built for them; a new value trains as the nearest class)
        mcfg.reward_values = resumed.get("reward_values")
    model = WorldModel(mcfg).to(device)
    if cfg.tokenizer_path:
        from simworld.models.vae import load_tokenizer

        model.tokenizer.load_state_dict(load_tokenizer(cfg.tokenizer_path).state_dict())
    if resumed is not None:  # keep the run's normalisation even if the store has grown since
        model.cfg.latent_shift, model.cfg.latent_scale = resumed["latent_shift"], resumed["latent_scale"]
    else:
        model.cfg.latent_shift, model.cfg.latent_scale = latent_stats(model, ds, cfg.seed)
    terminal = terminal_windows(ds) if cfg.terminal_fraction > 0 else None
    rewarded = reward_windows(ds) if cfg.reward_fraction > 0 else None
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    total = cfg.schedule_steps or cfg.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, cfg.warmup))
    step = 0
    ckpt = out / "checkpoint"
    if not cfg.resume and (ckpt / "trainer.json").exists():
        raise FileExistsError(
            f"{ckpt} holds a checkpoint: pass resume=true to continue it, or choose another out="
        )
    if cfg.resume and (ckpt / "trainer.json").exists():
        step = load_training_state(ckpt, model, opt, ema, device)["step"]
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, total, cfg.warmup), last_epoch=step - 1
        )
    net = DDP(model) if world > 1 else model
    if world > 1 and rank == 0:
        import torch.distributed as dist

        print(f"DDP: {world} processes, backend {dist.get_backend()}, {cfg.batch_size} windows each per step")
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.__dict__, indent=2, default=str))
        # lets WorldModel.from_pretrained(out) read the EMA weights of the last checkpoint mid-training
        (out / "model_config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2))
        writer = SummaryWriter(str(out / "tb"))
    bar = tqdm(total=cfg.steps, initial=step, desc="train world model", disable=not cfg.progress or rank > 0)
    model.train()
    t_last, frames_seen, logs = time.perf_counter(), 0, {}
    while step < cfg.steps:
        opt.zero_grad(set_to_none=True)
        for micro in range(cfg.accumulate):
            batch = batch_for_step(
                ds,
                cfg.batch_size,
                cfg.seed,
                step * cfg.accumulate + micro,
                rank,
                terminal,
                cfg.terminal_fraction,
                rewarded,
                cfg.reward_fraction,
            )
            if mirror is not None:  # a pure function of (seed, step, rank), as the batch: resumable
                mirror_rng = np.random.default_rng([cfg.seed, step * cfg.accumulate + micro, rank, 1])
                batch = mirror_batch(batch, mirror, mirror_rng, store.meta.action_space.get("start", 0))
            with autocast(device, cfg.precision):
                loss, logs = net(batch)
            (loss / cfg.accumulate).backward()
            frames_seen += batch["frames"].shape[0] * batch["frames"].shape[1]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        # EMA warmup: early on, average over the few steps there are rather than the initial weights
        ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.perf_counter()
            fps = frames_seen * world / (now - t_last)
            t_last, frames_seen = now, 0
            logs.update(
                {
                    "train/grad_norm": float(grad_norm),
                    "train/lr": sched.get_last_lr()[0],
                    "perf/frames_per_s": fps,
                }
            )
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
            bar.set_postfix(loss=f"{logs['train/loss']:.4f}", fps=f"{fps:.0f}")
        bar.update(1)
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            save_training_state(ckpt, model, opt, step, ema)
    bar.close()
    result: dict[str, Any] = {"steps": step, "last": logs}
    if rank == 0:
        bank_ids = train_ids if train_ids else val_ids
        ema.save_pretrained(
            out / "model",
            start_bank(store, bank_ids, cfg.bank_size, cfg.bank_frames, cfg.seed, cfg.bank_episode_starts),
        )
        writer.close()
        result["model"] = str(out / "model")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return result
