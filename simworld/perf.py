"""Model-side measurements for ``simworld bench``: dream throughput, per-step latency, FLOP/s
against the device's matmul peak, peak memory per sub-environment, and training throughput.

Every function times real work on the given device (CUDA work is synchronised before the clock
is read) and returns plain numbers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from simworld.train.common import autocast
from simworld.world_model import RolloutState, WorldModel


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loop(
    fn: Callable[[], object], device: torch.device, seconds: float, min_iters: int = 3, rounds: int = 3
) -> float:
    """Seconds per call of ``fn``: the best of ``rounds`` rounds, each repeating it for at least
    ``seconds / rounds`` and ``min_iters`` calls (the best round is the least disturbed by whatever
    else the machine does; a shared CPU is noisy)."""
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        iters = 0
        while iters < min_iters or time.perf_counter() - start < seconds / rounds:
            fn()
            iters += 1
        sync(device)
        best = min(best, (time.perf_counter() - start) / iters)
    return best


# ---------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory above the level at ``__enter__``, in bytes.

    CUDA: the allocator's peak. CPU (Linux): the process's peak resident set (``VmHWM``), reset on
    entry through ``/proc/self/clear_refs``; ``None`` where the kernel does not offer that.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
                self._base = self._status("VmRSS")
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._base is not None:
            peak = self._status("VmHWM")
            self.bytes = None if peak is None else max(peak - self._base, 0)


# ---------------------------------------------------------------- the dream
def tile_context(context: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``batch`` context windows (``frames (batch, t0, H, W, 3)``, ``actions``), repeating the given ones."""
    reps = -(-batch // len(context["frames"]))
    return {k: np.concatenate([context[k]] * reps)[:batch] for k in ("frames", "actions")}


def dream_throughput(
    model: WorldModel,
    batch: int,
    obs_mode: str,
    seconds: float,
    context: dict[str, np.ndarray],
    precision: str = "fp32",
    seed: int = 0,
) -> dict[str, float | None]:
    """Imagined steps/s (summed over the batch) of a ``DreamVectorEnv`` with random actions."""
    from envs.dream import DreamVectorEnv

    device = model.device
    # no episode ends while timing (no truncation, termination never fires): pure imagined steps,
    # not a mix with the random restarts of a few sub-environments
    env = DreamVectorEnv(
        batch,
        model,
        device=str(device),
        obs_mode=obs_mode,
        render_mode=None,
        precision=precision,
        max_episode_steps=None,
        termination_threshold=2.0,
    )
    env.reset(seed=seed, options=tile_context(context, batch))
    env.action_space.seed(seed)
    for _ in range(3):  # warm-up: first-call allocations (and compilation, of both passes)
        env.step(env.action_space.sample())
    per_step = timed_loop(lambda: env.step(env.action_space.sample()), device, seconds)
    return {"steps_per_s": batch / per_step, "ms_per_batch_step": per_step * 1e3}


def _env_peak_memory(
    checkpoint: str, device: str, batch: int, obs_mode: str, context: dict, threads: int
) -> int | None:
    """Peak memory (bytes) above the loaded model of a batch of dreams stepped a few times."""
    from envs.dream import DreamVectorEnv

    torch.set_num_threads(threads)
    model = WorldModel.from_pretrained(checkpoint, device=device)
    with PeakMemory(torch.device(device)) as mem:
        env = DreamVectorEnv(batch, model, device=device, obs_mode=obs_mode, render_mode=None)
        env.reset(seed=0, options=tile_context(context, batch))
        env.action_space.seed(0)
        for _ in range(3):
            env.step(env.action_space.sample())
    return mem.bytes


def env_peak_memory(
    checkpoint: str | Path, device: torch.device, batch: int, obs_mode: str, context: dict[str, np.ndarray]
) -> int | None:
    """:func:`_env_peak_memory` in a fresh process, so memory this process already holds (and would
    reuse) does not hide what a batch of dreams needs."""
    import multiprocessing as mp

    args = (str(checkpoint), str(device), batch, obs_mode, context, torch.get_num_threads())
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_env_peak_memory, args)


def _copy_state(state: RolloutState) -> RolloutState:
    idx = torch.arange(state.cache.batch, device=state.cache.device)
    gen = torch.Generator(device=state.cache.device)
    return RolloutState(state.cache.subset(idx), gen.manual_seed(0), state.steps.clone())


@torch.no_grad()
def step_latency(
    model: WorldModel,
    at: list[int],
    samples: int,
    context: dict[str, np.ndarray],
    precision: str = "fp32",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Median and minimum ms per step of one rollout (batch 1, pixels decoded) at rollout steps ``at``.

    One rollout steps with the KV cache up to the largest step; at each point of ``at`` it times the
    next ``samples`` cached steps, and the same number of cache-free steps (the whole window
    recomputed) on a copy of its state, so both are measured at the same point of the same rollout.
    """
    device = model.device
    rng = np.random.default_rng(seed)
    n = model.action_space.n if model.discrete else None
    frames, actions = context["frames"][:1], context["actions"][:1]

    def act() -> np.ndarray:
        if n is not None:
            return rng.integers(0, n, size=1)
        return rng.uniform(-1, 1, size=(1, *model.action_space.shape)).astype(np.float32)

    def clock(state: RolloutState, use_cache: bool) -> float:
        sync(device)
        t = time.perf_counter()
        model.step(state, act(), decode=True, use_cache=use_cache)
        sync(device)
        return time.perf_counter() - t

    out: dict[str, dict[str, float]] = {}
    with autocast(device, precision):
        state = model.reset(frames, actions, generator=torch.Generator(device=device).manual_seed(seed))
        done = 0
        for target in sorted(at):
            while done < target:
                model.step(state, act(), decode=False)
                done += 1
                if progress is not None:
                    progress(1)
            cached = [clock(state, True) for _ in range(samples)]
            done += samples
            copy = _copy_state(state)
            uncached = [clock(copy, False) for _ in range(samples)]
            out[str(target)] = {
                "cached_ms": statistics.median(cached) * 1e3,
                "uncached_ms": statistics.median(uncached) * 1e3,
                # the fastest of the samples: the step's own cost, least disturbed by the machine
                "cached_min_ms": min(cached) * 1e3,
                "uncached_min_ms": min(uncached) * 1e3,
            }
    return out


def _sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Q @ K^T and weights @ V of an attention call (``(..., s, d)`` shapes)."""
    *batch, s_q, d = q_shape
    s_k, d_v = k_shape[-2], v_shape[-1]
    return 2 * int(np.prod(batch)) * s_q * s_k * (d + d_v)


# fused attention kernels the stock flop counter does not know (it only knows the CUDA ones)
_EXTRA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


@torch.no_grad()
def step_flops(model: WorldModel, batch: int, context: dict[str, np.ndarray]) -> int:
    """FLOPs of one batched imagined step (all denoising passes + the cache-writing pass), counted
    by ``torch.utils.flop_counter`` (matmuls and attention; elementwise work is not counted)."""
    tiled = tile_context(context, batch)
    state = model.reset(tiled["frames"], tiled["actions"])
    a = np.zeros((batch, *model.action_space.shape), model.action_space.dtype)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
    with counter:
        model.step(state, a, decode=False)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, seconds: float) -> float:
    """FLOP/s of a square ``size`` matmul in ``dtype``: the device's practical peak for this run."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (oneDNN / cuBLAS pick their kernels)
    return 2 * size**3 / timed_loop(lambda: torch.mm(a, b), device, seconds)


@torch.no_grad()
def decode_throughput(
    decoder: torch.nn.Module, latent_shape: tuple[int, ...], batch: int, seconds: float, channels_last: bool
) -> float:
    """Frames/s of a convolutional decoder on ``(batch, *latent_shape)`` latents, in NCHW or NHWC layout."""
    device = next(decoder.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    decoder = decoder.to(memory_format=fmt).eval()
    z = torch.randn(batch, *latent_shape, device=device).contiguous(memory_format=fmt)
    decoder(z)  # warm-up
    per_call = timed_loop(lambda: decoder(z), device, seconds)
    decoder.to(memory_format=torch.contiguous_format)
    return batch / per_call


# ---------------------------------------------------------------- training
def train_throughput(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    seconds: float,
    precision: str = "fp32",
) -> float:
    """Frames/s of full training steps (forward, backward, AdamW) of ``model(batch) -> (loss, logs)``."""
    device = next(p for p in model.parameters() if p.requires_grad).device
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        with autocast(device, precision):
            loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    frames = int(np.prod(batch["frames"].shape[:2]))
    return frames / timed_loop(step, device, seconds)
