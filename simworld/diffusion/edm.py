"""EDM preconditioning and diffusion-forcing training of the dynamics model (Karras et al. 2022).

The network ``F`` never sees raw noisy latents: the denoiser is
``D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))`` with the scalings
chosen so that ``F``'s inputs and targets have unit variance at every noise level.

Training noise follows diffusion forcing: every frame of a window has its own noise level. Most
windows (``teacher_forcing``) instead hold the past frames at a small, random "context" noise
level and noise only the last frame, which is the situation of an autoregressive rollout, where
the context is the model's own (imperfect) output held at ``context_sigma``. With a small CPU
budget, mostly-forced windows taught the model to trust its context far sooner (measured: with
half the windows fully diffusion-forced, a 720-step model's rollouts faded to background within
a few frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DiffusionConfig:
    sigma_data: float = 0.5
    p_mean: float = -0.4  # log-normal training noise levels (EDM)
    p_std: float = 1.2
    sigma_min: float = 2e-3  # sampling schedule
    sigma_max: float = 5.0
    rho: float = 7.0
    steps: int = 1  # denoising steps per frame: 1 scored best on the CPU Balls model (docs/results.md)
    sampler: str = "euler"  # euler | heun
    context_sigma: float = 0.05  # noise the context is held at during rollouts
    # > 0: start sampling from the previous frame noised to this level instead of from pure noise
    # at sigma_max (an SDEdit-style warm start; objects stay put while the model is unsure)
    warm_start_sigma: float = 0.0
    context_sigma_max: float = 0.2  # training: context noise augmentation drawn from U(0, this)
    # fraction of windows with low-noise context and a noisy last frame (the rollout situation);
    # the rest are diffusion forcing (every frame at its own noise level)
    teacher_forcing: float = 0.9
    reward_weight: float = 1.0
    termination_weight: float = 1.0
    termination_pos_weight: float = 10.0  # terminations are rare: weigh the positives up
    # > 0: extra denoising-loss weight on latent positions that change from the previous frame
    # (moving objects), up to 1 + motion_weight where the change reaches motion_scale (latent units).
    # Small objects on a flat background otherwise count for a few percent of the loss, and a
    # short-trained model paints the background over them.
    motion_weight: float = 0.0
    motion_scale: float = 0.4
    # True: denoise around the previous frame, D(x) = prev + c_skip (x - prev) + c_out F, i.e. the
    # network predicts the change from the last frame. An unsure model then keeps the scene where it
    # was instead of regressing every pixel towards the data mean (the background).
    residual: bool = False
    # True: every frame of a teacher-forced window is a target, not only the last (a noisy copy of
    # each frame attends to the context copies of the frames before it; DiT.forward_dense). Twice the
    # tokens per window for five times the targets at window 6 (every frame but the first).
    dense_targets: bool = False
    # share of target frames trained at exactly sigma_max, the level the sampler starts from. At
    # sigma_max = 5 a latent still shows its frame through the noise, so a one-step sampler that
    # starts from pure noise asks the network a question it never trained on (balls fade; with
    # residual=true they stay behind as ghosts). Pair with a sigma_max that hides the frame (80).
    sigma_max_fraction: float = 0.0
    # sampling, discrete actions: > 0 denoises each frame as D(a) + g (D(a) - mean over actions of
    # D(a')), classifier-free guidance with the average over every action as the unconditional. It
    # scales how far two actions' frames part at each step by 1 + g. Meant for a model that
    # answers its actions less than the world does (CartPole: the pole's response to held pushes
    # 0.5-0.7 of the world's); there it lifted one model's and not another's, and no agent gained
    # (docs/results.md, session 31). Costs one network pass per action instead of one.
    action_guidance: float = 0.0


@dataclass
class Precond:
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def precondition(sigma: torch.Tensor, sigma_data: float) -> Precond:
    s2, d2 = sigma**2, sigma_data**2
    return Precond(
        c_skip=d2 / (s2 + d2),
        c_out=sigma * sigma_data / (s2 + d2).sqrt(),
        c_in=1 / (s2 + d2).sqrt(),
        c_noise=sigma.log() / 4,
    )


def _lognormal(b: int, t: int, cfg: DiffusionConfig, device: torch.device) -> torch.Tensor:
    return (torch.randn(b, t, device=device) * cfg.p_std + cfg.p_mean).exp()


def _target_levels(b: int, t: int, cfg: DiffusionConfig, device: torch.device) -> torch.Tensor:
    """Log-normal levels ``(b, t)``, a ``sigma_max_fraction`` of them replaced by sigma_max itself."""
    sigma = _lognormal(b, t, cfg, device)
    if cfg.sigma_max_fraction > 0:
        top = torch.rand(b, t, device=device) < cfg.sigma_max_fraction
        sigma = torch.where(top, torch.full_like(sigma, cfg.sigma_max), sigma)
    return sigma


def _training_levels(
    b: int, t: int, cfg: DiffusionConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-normal levels ``(b, t)``, which windows are teacher-forced ``(b,)``, and low context
    levels ``U(sigma_min, sigma_min + context_sigma_max)`` ``(b, t)``."""
    sigma = _target_levels(b, t, cfg, device)
    forced = torch.rand(b, device=device) < cfg.teacher_forcing
    ctx = torch.rand(b, t, device=device) * cfg.context_sigma_max + cfg.sigma_min
    return sigma, forced, ctx


def sample_training_sigmas(
    b: int, t: int, cfg: DiffusionConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame noise levels ``(b, t)``: diffusion forcing, or low-noise context + noisy last frame.

    Also returns per-frame loss weights ``(b, t)``: a forced window learns from its last frame only
    (denoising its barely-noised context would fill the loss with noise it cannot predict).
    """
    sigma, forced, ctx = _training_levels(b, t, cfg, device)
    ctx[:, -1] = sigma[:, -1]
    weight = torch.ones(b, t, device=device)
    weight[forced, :-1] = 0.0
    return torch.where(forced[:, None], ctx, sigma), weight


def sample_dense_sigmas(
    b: int, t: int, cfg: DiffusionConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise levels ``(b, t)`` of the context copies and of the target copies of a dense window.

    Targets are log-normal (EDM). The context is held at a small random level in teacher-forced
    windows and at log-normal levels in the rest (diffusion forcing: learn to read noisy context).
    """
    target, forced, low = _training_levels(b, t, cfg, device)
    high = _lognormal(b, t, cfg, device)
    return torch.where(forced[:, None], low, high), target


def sampling_sigmas(
    cfg: DiffusionConfig, steps: int | None = None, device=None, sigma_max: float | None = None
) -> torch.Tensor:
    """Karras schedule from sigma_max down to sigma_min, then 0: ``steps + 1`` values."""
    n = steps or cfg.steps
    top = sigma_max or cfg.sigma_max
    if n < 1:
        raise ValueError(f"need at least one denoising step, got {n}")
    ramp = torch.linspace(0, 1, n, device=device, dtype=torch.float64)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), top ** (1 / cfg.rho)
    sigmas = (hi + ramp * (lo - hi)) ** cfg.rho if n > 1 else torch.tensor([top], device=device)
    return torch.cat([sigmas.double(), sigmas.new_zeros(1, dtype=torch.float64)]).float()


def diffusion_losses(
    out: torch.Tensor,  # (b, t, c, h, w) network output F
    clean: torch.Tensor,  # (b, t, c, h, w)
    noisy: torch.Tensor,  # (b, t, c, h, w)
    pre: Precond,  # broadcastable to (b, t, 1, 1, 1)
    pixel_weight: torch.Tensor | None = None,  # (b, t, 1, h, w): per-position weights
) -> torch.Tensor:
    """Per-frame EDM loss ``(b, t)``: MSE of F against its target, i.e. the weighted denoising error
    (a weighted mean over positions when ``pixel_weight`` is given)."""
    target = (clean - pre.c_skip * noisy) / pre.c_out
    err = F.mse_loss(out, target, reduction="none")
    if pixel_weight is None:
        return err.flatten(2).mean(-1)
    w = pixel_weight.expand_as(err)
    return (err * w).flatten(2).sum(-1) / w.flatten(2).sum(-1)


def motion_weights(clean: torch.Tensor, weight: float, scale: float) -> torch.Tensor:
    """``(b, t, 1, h, w)`` loss weights: ``1 + weight * min(|x_t - x_{t-1}|_max / scale, 1)``.

    The change is the largest over channels at each position; the first frame of a window has no
    previous frame and weighs 1 everywhere.
    """
    change = (clean[:, 1:] - clean[:, :-1]).abs().amax(2, keepdim=True)
    moved = torch.cat([torch.zeros_like(change[:, :1]), (change / scale).clamp(max=1.0)], dim=1)
    return 1.0 + weight * moved


def head_losses(
    reward_pred: torch.Tensor,  # (b, t): reward of the transition into frame t
    term_logit: torch.Tensor,  # (b, t)
    rewards: torch.Tensor,  # (b, t - 1)
    terminated: torch.Tensor,  # (b, t - 1)
    use: torch.Tensor,  # (b, t - 1) bool: frames whose noise is low enough to read
    cfg: DiffusionConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    w = use.float()
    denom = w.sum().clamp_min(1.0)
    r = ((reward_pred[:, 1:] - rewards) ** 2 * w).sum() / denom
    pos_weight = torch.tensor(cfg.termination_pos_weight, device=term_logit.device)
    bce = F.binary_cross_entropy_with_logits(
        term_logit[:, 1:], terminated.float(), pos_weight=pos_weight, reduction="none"
    )
    return r, (bce * w).sum() / denom
