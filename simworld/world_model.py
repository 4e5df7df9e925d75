"""The ``WorldModel`` bundle: tokenizer + diffusion transformer + reward/termination heads + config.

Training: ``loss, logs = model(batch)`` on windows of real frames. Inference is batched and
autoregressive: ``state = model.reset(frames, actions)`` fills the KV cache from real context
frames; each ``model.step(state, actions)`` samples the next frame with a few denoising passes of
the new frame only, then one pass at the context noise level that writes it into the cache and
reads the reward and termination heads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from simworld.checkpoint import (
    CheckpointError,
    atomic_save_tensors,
    load_state_strict,
    load_tensors,
    read_json,
    replace_dir,
)
from simworld.data.spaces import check_action_array, spec_to_space
from simworld.diffusion.edm import (
    DiffusionConfig,
    diffusion_losses,
    head_losses,
    motion_weights,
    precondition,
    sample_dense_sigmas,
    sample_training_sigmas,
    sampling_sigmas,
)
from simworld.diffusion.sampler import sample
from simworld.models.dit import DiT, DynamicsConfig
from simworld.models.kv_cache import KVCache
from simworld.models.reward_model import RewardModel, RewardModelConfig
from simworld.models.tokenizer import IdentityTokenizer, IdentityTokenizerConfig, frames_to_tensor

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, BANK_FILE = "config.json", "model.safetensors", "start_bank.safetensors"


@dataclass
class WorldModelConfig:
    world_id: str = "simworld/Balls-v0"
    frame_size: tuple[int, int] = (64, 64)
    action_space: dict = field(default_factory=lambda: {"type": "Discrete", "n": 3, "start": 0})
    fps: float = 15.0
    world_params: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=lambda: {"kind": "identity", "unshuffle": 4})
    dynamics: dict = field(default_factory=dict)  # DynamicsConfig fields (latent channels are filled in)
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields
    # the dynamics see (tokenizer latent - shift) / scale: measured on the training data so the
    # latents' spread matches sigma_data, whatever the tokenizer (pixels are mostly black background)
    latent_shift: float = 0.0
    latent_scale: float = 1.0
    # the distinct rewards of the training data when there are few (None: continuous rewards); the
    # dream snaps the reward head's regression onto them, so a small bias cannot add up over steps
    reward_values: list[float] | None = None
    # a separate reward/termination CNN on clean latents (RewardModelConfig fields; None: the
    # transformer's own heads). Rollouts and heads_on_frames read it instead of those heads.
    reward_model: dict | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def build_tokenizer(cfg: dict, frame_size: tuple[int, int]) -> nn.Module:
    kind = cfg.get("kind", "identity")
    args = {k: v for k, v in cfg.items() if k != "kind"}
    if kind == "identity":
        return IdentityTokenizer(IdentityTokenizerConfig(frame_size=tuple(frame_size), **args))
    if kind == "vae":
        from simworld.models.vae import VAE, VAEConfig

        args["frame_size"] = tuple(frame_size)
        return VAE(VAEConfig(**args))
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'identity' or 'vae'")


@dataclass
class RolloutState:
    """What a batch of imagined rollouts carries between steps."""

    cache: KVCache
    generator: torch.Generator | None
    steps: torch.Tensor  # (b,) steps imagined since each element's reset
    last: torch.Tensor | None = None  # (b, c, h, w) the newest clean latent (read by the reward model)


REWARD_MODES = ("expected", "likeliest")


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = build_tokenizer(cfg.tokenizer, cfg.frame_size)
        tok_cfg = self.tokenizer.cfg
        self.latent_channels, self.latent_size = tok_cfg.latent_channels, tuple(tok_cfg.latent_size)
        dyn = {**cfg.dynamics, "latent_channels": self.latent_channels, "action_space": cfg.action_space}
        self.dynamics = DiT(DynamicsConfig(**dyn))
        self.diffusion = DiffusionConfig(**cfg.diffusion)
        self.tokenizer.requires_grad_(False)  # trained on its own; frozen while the dynamics learn
        self.reward_model = None
        if cfg.reward_model is not None:
            self.reward_model = RewardModel(
                RewardModelConfig(
                    latent_channels=self.latent_channels,
                    action_space=cfg.action_space,
                    reward_values=cfg.reward_values,
                    **cfg.reward_model,
                )
            )
        self.reward_mode = "expected"  # how `step` reads the reward model's classes (see REWARD_MODES)

    @property
    def reward_mode(self) -> str:
        """``"expected"``: a step pays the expected reward over the reward model's classes;
        ``"likeliest"``: the most probable class's reward (unsure steps pay nothing). Set on a loaded
        model (``DreamVectorEnv(reward_mode=...)`` does); models without a reward model ignore it."""
        return self._reward_mode

    @reward_mode.setter
    def reward_mode(self, mode: str) -> None:
        if mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {mode!r}")
        self._reward_mode = mode

    @property
    def device(self) -> torch.device:
        return next(self.dynamics.parameters()).device

    @property
    def context(self) -> int:
        return self.dynamics.cfg.context

    @functools.cached_property
    def action_space(self) -> gym.Space:
        return spec_to_space(self.cfg.action_space)

    @property
    def discrete(self) -> bool:
        return self.cfg.action_space["type"] == "Discrete"

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``float (b, t, 3, H, W)`` in [-1, 1] -> normalised latents ``(b, t, c, h, w)``."""
        return (self.tokenizer.encode(frames) - self.cfg.latent_shift) / self.cfg.latent_scale

    def clip_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Keep a sampled latent within what a frame can hold where the tokenizer says (pixels: -1..1).
        Decoding clips anyway; clipping before the frame enters the context keeps a long rollout's
        errors from feeding on themselves until the latents overflow (a 1,200-step CartPole model
        went from frames to grey to NaN within 100 steps without it; session 23)."""
        bounds = getattr(self.tokenizer, "value_range", None)
        if bounds is None:
            return latent
        lo, hi = ((v - self.cfg.latent_shift) / self.cfg.latent_scale for v in bounds)
        return latent.clamp(min(lo, hi), max(lo, hi))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(latents * self.cfg.latent_scale + self.cfg.latent_shift)

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion-forcing loss on windows: ``frames (b, t, H, W, 3)`` uint8, ``actions (b, t-1, ...)``,
        ``rewards (b, t-1)``, ``terminated (b, t-1)``."""
        x = frames_to_tensor(batch["frames"], self.device)  # (b, t, 3, H, W)
        b, t = x.shape[:2]
        with torch.no_grad():
            clean = self.encode(x)  # (b, t, c, h, w)
        actions, valid = self.previous_actions(batch["actions"].to(self.device), t)
        cap = self.diffusion.context_sigma_max + self.diffusion.sigma_min

        def noised(levels: torch.Tensor):  # (b, t) -> noisy latents and their preconditioning
            s = levels[..., None, None, None]
            return clean + s * torch.randn_like(clean), precondition(s, self.diffusion.sigma_data)

        if self.diffusion.dense_targets:  # every frame a target, beside a context copy of the window
            ctx_sigma, sigma = sample_dense_sigmas(b, t, self.diffusion, clean.device)  # (b, t) each
            (ctx, ctx_pre), (noisy, pre) = noised(ctx_sigma), noised(sigma)
            out, reward, term = self.dynamics.forward_dense(
                ctx_pre.c_in * ctx,
                ctx_pre.c_noise[..., 0, 0, 0],
                pre.c_in * noisy,
                pre.c_noise[..., 0, 0, 0],
                actions,
                valid,
            )
            # the noisy copies are the targets; the heads read the context copies, as a rollout
            # reads them in the pass that writes the new frame into the context
            out, reward, term = out[:, t:], reward[:, :t], term[:, :t]
            weight = torch.ones(b, t, device=clean.device)
            weight[:, 0] = 0.0  # a rollout never generates a frame without a previous one
        else:
            sigma, weight = sample_training_sigmas(b, t, self.diffusion, clean.device)  # (b, t) each
            noisy, pre = noised(sigma)
            out, reward, term = self.dynamics(pre.c_in * noisy, pre.c_noise[..., 0, 0, 0], actions, valid)
            ctx, ctx_sigma = noisy, sigma  # each frame is the next one's context
        motion = self.diffusion.motion_weight
        pixel_weight = motion_weights(clean, motion, self.diffusion.motion_scale) if motion > 0 else None
        # residual: each frame is denoised around the frame before it as the network sees it when that
        # is held at a context noise level (as a rollout holds it), so the model also learns to clean
        # that noise up instead of copying it forward; noisier frames (diffusion forcing) lend their
        # noise only up to that level, and the first frame has no anchor
        anchor = 0.0
        if self.diffusion.residual:
            s = ctx_sigma[:, :-1, None, None, None]
            held = clean[:, :-1] + (ctx[:, :-1] - clean[:, :-1]) * s.clamp(max=cap) / s
            anchor = torch.cat([torch.zeros_like(clean[:, :1]), held], 1)
        denoise = diffusion_losses(out.float(), clean - anchor, noisy - anchor, pre, pixel_weight)  # (b, t)
        # the heads are read at the context noise level in rollouts: train them where the frame is that clean
        readable = ctx_sigma[:, 1:] <= cap
        r_loss, t_loss = head_losses(
            reward.float(),
            term.float(),
            batch["rewards"].to(self.device).float(),
            batch["terminated"].to(self.device),
            readable,
            self.diffusion,
        )
        denoise_loss = (denoise * weight).sum() / weight.sum()
        loss = (
            denoise_loss + self.diffusion.reward_weight * r_loss + self.diffusion.termination_weight * t_loss
        )
        logs = {}
        if self.reward_model is not None:
            acts = batch["actions"].to(self.device)
            rews, terms = batch["rewards"].to(self.device), batch["terminated"].to(self.device)
            # every transition of the window on clean latents: what the world showed
            rm_r, rm_t = self.reward_model.loss(
                clean[:, :-1].flatten(0, 1),
                clean[:, 1:].flatten(0, 1),
                acts.flatten(0, 1),
                rews.flatten(0, 1),
                terms.flatten(0, 1),
            )
            # and the last transition with the new frame as the denoiser reconstructs it from its
            # noise level: what a rollout shows (one denoising step from sigma_max is the noisiest of
            # these). Trained on both, the model is sharp on clean frames and calibrated on blurry ones.
            denoised = (anchor + pre.c_skip * (noisy - anchor) + pre.c_out * out.float())[:, -1].detach()
            gen_r, gen_t = self.reward_model.loss(
                clean[:, -2], denoised, acts[:, -1], rews[:, -1], terms[:, -1]
            )
            loss = loss + rm_r + rm_t + gen_r + gen_t
            logs = {
                "train/reward_model_reward": rm_r.item(),
                "train/reward_model_termination": rm_t.item(),
                "train/reward_model_reward_generated": gen_r.item(),
                "train/reward_model_termination_generated": gen_t.item(),
            }
        logs = {
            **logs,
            "train/loss": loss.item(),
            "train/denoise": denoise_loss.item(),
            "train/denoise_last": denoise[:, -1].mean().item(),
            "train/reward_mse": r_loss.item(),
            "train/termination_bce": t_loss.item(),
        }
        return loss, logs

    def previous_actions(self, actions: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions between frames ``(b, t-1, ...)`` -> the action that led to each frame ``(b, t, ...)`` + validity."""
        b = actions.shape[0]
        pad = torch.zeros((b, 1, *actions.shape[2:]), dtype=actions.dtype, device=actions.device)
        shifted = torch.cat([pad, actions], dim=1)[:, :t]
        valid = torch.ones(b, t, dtype=torch.bool, device=actions.device)
        valid[:, 0] = False
        return shifted, valid

    # ------------------------------------------------------------------ inference
    def _denoiser(
        self,
        actions: torch.Tensor,
        valid: torch.Tensor,
        cache: KVCache,
        write: bool,
        use_cache: bool = True,
        anchor: torch.Tensor | float = 0.0,
        guidance: float = 0.0,
    ):
        """``D(x, sigma)`` for the next frame; ``anchor`` ``(b, 1, c, h, w)``: the previous latent (as
        held in the context) a residual model denoises around (0 otherwise); ``guidance``: the
        action guidance (``DiffusionConfig.action_guidance``; discrete actions, not while writing)."""
        forward = self.dynamics.forward_cached if use_cache else self.dynamics.forward_window

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            pre = precondition(sigma[:, None, None, None, None], self.diffusion.sigma_data)
            x_in, c_noise = pre.c_in * x, pre.c_noise[:, :, 0, 0, 0]
            if not guidance:
                out, reward, term = forward(x_in, c_noise, actions, valid, cache, write=write)
                out = out.float()
            else:  # every action's denoised frame; the taken one pushed away from their mean
                space = self.action_space
                passes = [
                    forward(
                        x_in, c_noise, torch.full_like(actions, space.start + k), valid, cache, write=False
                    )
                    for k in range(space.n)
                ]
                outs = torch.stack([o.float() for o, _, _ in passes])  # (n, b, 1, c, h, w)
                taken, rows = (actions[:, 0] - space.start).long(), torch.arange(actions.shape[0])
                out = outs[taken, rows]
                out = out + guidance * (out - outs.mean(0))
                reward = torch.stack([r for _, r, _ in passes])[taken, rows]
                term = torch.stack([t for _, _, t in passes])[taken, rows]
            denoise.heads = (reward[:, 0], term[:, 0])
            return anchor + pre.c_skip * (x - anchor) + pre.c_out * out

        return denoise

    def new_state(self, batch: int, generator: torch.Generator | None = None) -> RolloutState:
        d = self.dynamics.cfg
        p = d.patch_size
        grid = (self.latent_size[0] // p, self.latent_size[1] // p)
        cache = KVCache(
            self.dynamics.cache_layers, batch, d.heads, d.dim // d.heads, grid, d.context, device=self.device
        )
        return RolloutState(cache, generator, torch.zeros(batch, dtype=torch.long))

    def _write(
        self,
        latent: torch.Tensor,
        actions: torch.Tensor,
        valid: torch.Tensor,
        state: RolloutState,
        use_cache: bool = True,
    ):
        """Hold a clean latent ``(b, 1, c, h, w)`` at the context noise level and add it to the cache."""
        sigma = torch.full((latent.shape[0],), self.diffusion.context_sigma, device=latent.device)
        noise = torch.randn(latent.shape, generator=state.generator, device=latent.device)
        denoise = self._denoiser(actions, valid, state.cache, write=True, use_cache=use_cache)
        denoise(latent + sigma[:, None, None, None, None] * noise, sigma)
        return denoise.heads

    @torch.no_grad()
    def reset(
        self,
        frames: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        state: RolloutState | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
    ) -> RolloutState:
        """Start rollouts from real context: ``frames (b, t0, H, W, 3)`` uint8 and the ``t0 - 1`` actions between them.

        With ``state`` and a boolean ``mask`` over its batch, only the masked elements restart (from
        ``frames`` of those elements, in order); the others keep their context untouched.
        """
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (*self.cfg.frame_size, 3):
            raise ValueError(
                f"context frames must be uint8 (batch, t, {self.cfg.frame_size[0]}, {self.cfg.frame_size[1]}, 3), "
                f"got shape {tuple(frames.shape)}"
            )
        b, t0 = frames.shape[:2]
        if actions is None:
            actions = torch.zeros((b, t0 - 1, *self._action_shape()), dtype=self._action_dtype())
        actions = torch.as_tensor(np.asarray(actions)).to(self.device)
        if actions.shape[:2] != (b, t0 - 1):
            raise ValueError(
                f"context actions must have shape ({b}, {t0 - 1}, ...), got {tuple(actions.shape)}"
            )
        frames = frames[:, -self.context :]  # only the window the model can see
        actions = actions[:, -(frames.shape[1] - 1) :] if frames.shape[1] > 1 else actions[:, :0]
        if state is None:
            target = state = self.new_state(b, generator)
        else:
            mask = np.ones(state.cache.batch, dtype=bool) if mask is None else np.asarray(mask)
            idx = torch.as_tensor(mask, device=state.cache.device).nonzero().flatten()
            if len(idx) != b:
                raise ValueError(f"mask selects {len(idx)} elements but {b} context windows were given")
            target = RolloutState(state.cache.subset(idx), state.generator, state.steps[idx.cpu()])
            target.cache.reset()
        latents = self.encode(frames_to_tensor(frames, self.device))  # (b, t0, c, h, w)
        prev, valid = self.previous_actions(actions, latents.shape[1])
        for i in range(latents.shape[1]):
            self._write(latents[:, i : i + 1], prev[:, i : i + 1], valid[:, i : i + 1], target)
        target.last = latents[:, -1]
        if target is not state:
            state.cache.assign(idx, target.cache)
            state.steps[idx.cpu()] = 0
            if state.last is None:
                state.last = torch.zeros((state.cache.batch, *latents.shape[2:]), device=latents.device)
            state.last[idx] = target.last
        return state

    @torch.no_grad()
    def step(
        self,
        state: RolloutState,
        actions: np.ndarray | torch.Tensor,
        decode: bool = True,
        use_cache: bool = True,
    ) -> tuple[np.ndarray | None, torch.Tensor, np.ndarray, np.ndarray]:
        """Imagine one step for every batch element.

        Args:
            actions: ``(b,)`` ints (Discrete) or ``(b, *shape)`` floats (Box).
            decode: also decode the new latent to pixels (off for agents that read latents).
            use_cache: False recomputes the whole window of ``context`` frames instead of reading
                cached keys/values (``context`` times the work; for benchmarks and checks). Once a
                rollout has stepped without the cache it must keep doing so until it is reset.

        Returns:
            ``(frames uint8 (b, H, W, 3) or None, latents (b, c, h, w), rewards (b,), termination probability (b,))``
        """
        actions = np.asarray(actions.cpu() if torch.is_tensor(actions) else actions)
        check_action_array(actions, self.action_space, state.cache.batch)
        if use_cache and state.cache.stale:
            raise RuntimeError(
                "this rollout stepped without the KV cache, so the cache misses frames: keep use_cache=False "
                "or reset it"
            )
        a = torch.as_tensor(actions, device=self.device)[:, None]  # (b, 1, ...)
        valid = torch.ones(a.shape[0], 1, dtype=torch.bool, device=self.device)
        shape = (a.shape[0], 1, self.latent_channels, *self.latent_size)
        warm = self.diffusion.warm_start_sigma
        sigmas = sampling_sigmas(self.diffusion, device=self.device, sigma_max=warm or None)
        init, anchor = None, 0.0
        held = state.cache.prev  # the previous frame as written to the context (at context_sigma)
        if held is not None and (warm or self.diffusion.residual):
            init = held * (self.diffusion.context_sigma**2 + self.diffusion.sigma_data**2) ** 0.5
            if self.diffusion.residual:  # noise around the previous frame, denoised around it
                anchor = init
        latent = sample(
            self._denoiser(
                a, valid, state.cache, write=False, use_cache=use_cache, anchor=anchor, guidance=self.guidance
            ),
            shape,
            sigmas,
            self.diffusion.sampler,
            state.generator,
            self.device,
            init=init,
        )
        latent = self.clip_latent(latent)
        reward, term = self._write(latent, a, valid, state, use_cache=use_cache)
        reward, prob = reward.float(), torch.sigmoid(term.float())
        if self.reward_model is not None:
            prev = state.last if state.last is not None else latent[:, 0]
            reward, prob = self.reward_model.predict(
                prev, latent[:, 0], a[:, 0], likeliest=self.reward_mode == "likeliest"
            )
        state.last = latent[:, 0]
        state.steps += 1
        frames = None
        if decode:
            from simworld.models.tokenizer import tensor_to_frames

            frames = tensor_to_frames(self.decode(latent)[:, 0])
        return frames, latent[:, 0], reward.cpu().numpy(), prob.cpu().numpy()

    @torch.no_grad()
    def heads_on_frames(
        self, frames: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reward and termination probability of every transition of real clips, read the way a
        rollout reads them (each frame at the context noise level, causal attention).

        ``frames (b, t, H, W, 3)`` uint8 and the ``t - 1`` actions between them -> ``rewards (b, t-1)``,
        ``termination probabilities (b, t-1)``. Separates what the heads know from what a rollout shows them.
        """
        x = frames_to_tensor(torch.as_tensor(np.asarray(frames)), self.device)
        clean = self.encode(x)  # (b, t, c, h, w)
        b, t = clean.shape[:2]
        if self.reward_model is not None:
            a = torch.as_tensor(np.asarray(actions)).to(self.device)
            reward, prob = self.reward_model.predict(
                clean[:, :-1].flatten(0, 1), clean[:, 1:].flatten(0, 1), a.flatten(0, 1)
            )
            return reward.view(b, t - 1).cpu().numpy(), prob.view(b, t - 1).cpu().numpy()
        gen = torch.Generator(device=self.device).manual_seed(seed)
        sigma = torch.full((b, t), self.diffusion.context_sigma, device=self.device)
        noisy = clean + sigma[..., None, None, None] * torch.randn(
            clean.shape, generator=gen, device=self.device
        )
        pre = precondition(sigma[..., None, None, None], self.diffusion.sigma_data)
        acts, valid = self.previous_actions(torch.as_tensor(np.asarray(actions)).to(self.device), t)
        _, reward, term = self.dynamics(pre.c_in * noisy, pre.c_noise[..., 0, 0, 0], acts, valid)
        return reward[:, 1:].float().cpu().numpy(), torch.sigmoid(term[:, 1:].float()).cpu().numpy()

    def _action_shape(self) -> tuple[int, ...]:
        return () if self.discrete else tuple(self.cfg.action_space["shape"])

    def _action_dtype(self) -> torch.dtype:
        return torch.long if self.discrete else torch.float32

    # ------------------------------------------------------------------ persistence
    def save_pretrained(
        self,
        path: str | Path,
        start_bank: dict[str, np.ndarray] | None = None,
        dtype: torch.dtype | None = None,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and optionally ``start_bank.safetensors`` atomically.

        ``dtype=torch.float16`` halves the weights on disk (for shipping); loading casts them back.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        (tmp / CONFIG_FILE).write_text(json.dumps(self.cfg.to_dict(), indent=2))
        state = self.state_dict()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        atomic_save_tensors(tmp / WEIGHTS_FILE, state, {"format_version": FORMAT_VERSION})
        bank = start_bank if start_bank is not None else getattr(self, "start_bank", None)
        if bank is not None:
            atomic_save_tensors(tmp / BANK_FILE, {k: torch.as_tensor(np.asarray(v)) for k, v in bank.items()})
        replace_dir(tmp, path)
        return path

    def set_sampling(
        self,
        steps: int | None = None,
        sampler: str | None = None,
        warm_start_sigma: float | None = None,
        context_sigma: float | None = None,
        action_guidance: float | None = None,
    ) -> None:
        """Change how frames are sampled (None keeps the checkpoint's setting); the weights stay as trained.
        ``context_sigma``: the noise level each frame is held at in the context of the next ones;
        ``action_guidance``: ``DiffusionConfig.action_guidance`` (discrete actions only)."""
        if steps is not None:
            if int(steps) < 1:
                raise ValueError(f"denoising steps must be >= 1, got {steps}")
            self.diffusion.steps = int(steps)
        if sampler is not None:
            if sampler not in ("euler", "heun"):
                raise ValueError(f"unknown sampler {sampler!r}: expected 'euler' or 'heun'")
            self.diffusion.sampler = sampler
        if warm_start_sigma is not None:
            if float(warm_start_sigma) < 0:
                raise ValueError(f"warm_start_sigma must be >= 0, got {warm_start_sigma}")
            self.diffusion.warm_start_sigma = float(warm_start_sigma)
        if context_sigma is not None:
            if float(context_sigma) <= 0:
                raise ValueError(
                    f"context_sigma must be > 0 (the level's log conditions the network), got {context_sigma}"
                )
            self.diffusion.context_sigma = float(context_sigma)
        if action_guidance is not None:
            self.diffusion.action_guidance = self._checked_guidance(float(action_guidance))

    @property
    def guidance(self) -> float:
        """The action guidance ``step`` samples with."""
        return self._checked_guidance(self.diffusion.action_guidance)

    def _checked_guidance(self, g: float) -> float:
        """``g``, or a clear error where action guidance cannot apply."""
        if not g:
            return 0.0
        if not g > 0:
            raise ValueError(f"action_guidance must be >= 0, got {g}")
        if not self.discrete:
            raise ValueError(
                f"action_guidance needs a Discrete action space (it averages over every action), "
                f"this model's is {self.cfg.action_space['type']}"
            )
        return float(g)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> WorldModel:
        """Rebuild a model from its directory; every problem is a ``CheckpointError`` naming the file."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"no world-model checkpoint at {path} (expected a directory with {CONFIG_FILE})"
            )
        weights = path / WEIGHTS_FILE
        if not (path / CONFIG_FILE).exists() and (path / "model_config.json").exists():
            # a training run in progress: its last checkpoint's EMA weights
            raw, weights = read_json(path / "model_config.json"), path / "checkpoint" / "ema.safetensors"
        else:
            raw = read_json(path / CONFIG_FILE)
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path / CONFIG_FILE} has format_version {version!r}; this simworld reads {FORMAT_VERSION}"
            )
        try:
            cfg = WorldModelConfig(**raw)
            model = cls(cfg)
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path / CONFIG_FILE} does not describe a valid world model: {e}") from e
        load_state_strict(model, load_tensors(weights), str(weights))
        if (path / BANK_FILE).exists():
            model.start_bank = {k: v.numpy() for k, v in load_tensors(path / BANK_FILE).items()}
        return model.to(device).eval()
