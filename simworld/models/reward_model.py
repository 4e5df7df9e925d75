"""A separate reward/termination model: a small CNN on (previous latent, latent, action).

DIAMOND trains its reward and termination predictor apart from the diffusion model, as a classifier
on clean frames; we do the same. The diffusion transformer's own heads read pooled tokens of a noisy
frame and share their capacity with denoising, and on CPU budgets they barely learn (docs/results.md,
agent benchmark): the dream then never pays and never ends, and teaches nothing. This model sees the
clean latents of two consecutive frames, which is all a contact (a reward in Balls) or a ball on the
floor (a termination) needs, and trains in the same optimiser step as the dynamics.

Rewards that take few values (``reward_values``) are classes, so a prediction is a probability per
reward and the expected reward is calibrated; otherwise the reward is regressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from simworld.models.dit import ActionEmbedder


@dataclass
class RewardModelConfig:
    latent_channels: int = 48
    action_space: dict = field(default_factory=lambda: {"type": "Discrete", "n": 3, "start": 0})
    reward_values: list[float] | None = None  # reward classes; None: regress the reward
    channels: tuple[int, ...] = (64, 128, 128)  # conv widths; every width after the first halves h and w
    hidden: int = 256


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()
    )


class RewardModel(nn.Module):
    """``(prev latent, latent, action)`` -> reward (expected value) and termination logit per transition."""

    def __init__(self, cfg: RewardModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = list(cfg.channels)
        layers = [_conv(2 * cfg.latent_channels, widths[0], 1)]
        layers += [_conv(a, b, 2) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        self.convs = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.proj = nn.Linear(widths[-1] * 16, cfg.hidden)
        self.action_emb = ActionEmbedder(cfg.action_space, cfg.hidden)
        classes = len(cfg.reward_values) if cfg.reward_values else 0
        self.classes = classes
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU())
        self.reward_head = nn.Linear(cfg.hidden, max(classes, 1))
        self.term_head = nn.Linear(cfg.hidden, 1)
        if classes:
            self.register_buffer(
                "values", torch.tensor(cfg.reward_values, dtype=torch.float32), persistent=False
            )

    def forward(
        self, prev: torch.Tensor, latent: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``prev, latent (n, c, h, w)``, ``actions (n,)`` or ``(n, a)`` -> reward logits ``(n, K)`` (or
        the regressed reward ``(n, 1)``) and the termination logit ``(n,)``."""
        x = self.proj(self.convs(torch.cat([prev, latent], dim=1)))  # (n, hidden)
        valid = torch.ones(actions.shape[0], 1, dtype=torch.bool, device=actions.device)
        x = self.out(x + self.action_emb(actions[:, None], valid)[:, 0])
        return self.reward_head(x), self.term_head(x)[:, 0]

    def predict(
        self, prev: torch.Tensor, latent: torch.Tensor, actions: torch.Tensor, likeliest: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> reward ``(n,)`` and termination probability ``(n,)``.

        The reward is the expectation over the reward classes, or with ``likeliest`` the value of the
        most probable class (DIAMOND's argmax): an unsure transition (p = 0.3 of a bounce on a blurry
        frame) then pays nothing instead of 0.3. Regressed rewards are returned as they are.
        """
        reward, term = self(prev, latent, actions)
        reward = reward.float()
        if self.classes and likeliest:
            reward = self.values[reward.argmax(-1)]
        elif self.classes:
            reward = (reward.softmax(-1) * self.values).sum(-1)
        else:
            reward = reward[:, 0]
        return reward, torch.sigmoid(term.float())

    def loss(
        self,
        prev: torch.Tensor,  # (n, c, h, w)
        latent: torch.Tensor,
        actions: torch.Tensor,  # (n, ...)
        rewards: torch.Tensor,  # (n,)
        terminated: torch.Tensor,  # (n,) bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over the reward classes (or MSE), binary cross-entropy for termination."""
        reward, term = self(prev, latent, actions)
        reward, rewards = reward.float(), rewards.float()
        if self.classes:
            target = (rewards[:, None] - self.values[None]).abs().argmin(-1)
            r_loss = F.cross_entropy(reward, target)
        else:
            r_loss = F.mse_loss(reward[:, 0], rewards)
        t_loss = F.binary_cross_entropy_with_logits(term.float(), terminated.float())
        return r_loss, t_loss
