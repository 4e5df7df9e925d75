"""The dynamics model: a diffusion transformer over spacetime latent patches.

Each latent frame ``(C, h, w)`` is cut into ``p x p`` patches, one token each. Tokens attend to
their own frame and to earlier frames, never to later ones (block-causal attention), so during a
rollout the keys and values of past frames can be cached and each step runs the new frame only.
Every frame is conditioned (adaLN-Zero) on its own noise level and on the action that led to it
(and, with ``prev_actions``, on the actions before that one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from simworld.models.kv_cache import KVCache
from simworld.models.rope import apply_rope, rope_angles

NO_PREV_C_NOISE = 2.0  # the noise embedding a frame without a previous frame sees for it (sigma ~ e^8)

# name -> (dim, depth, heads); the keys are the values of DynamicsConfig.size
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 2),
    "S": (128, 6, 4),
    "B": (384, 12, 6),
    "L": (768, 18, 12),
}


ATTENTION_KINDS = ("block_causal", "factorised")


@dataclass
class DynamicsConfig:
    latent_channels: int = 48
    patch_size: int = 2
    size: str = "S"
    dim: int | None = None  # None: from DIT_SIZES[size]
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    action_space: dict = field(default_factory=lambda: {"type": "Discrete", "n": 3, "start": 0})
    context: int = 8  # frames a token may attend to (the rollout's sliding window, incl. the new frame)
    # each patch also carries the same patch of the previous frame: a spacetime patch two frames deep
    # (overlapping in time), so "mostly copy the last frame" is local to a token, not learned attention
    prev_frame_input: bool = True
    # how many previous frames each patch carries (with prev_frame_input): 2 puts the last two side
    # by side, so a token sees locally how far its content moved (velocity), as DIAMOND's denoiser
    # sees its stacked frames as input channels
    prev_frames: int = 1
    # how many actions before the one that led to a frame also condition it, newest first. An action
    # often shows only in the frame after next: CartPole's Euler step moves the cart and pole with
    # the old velocities, so the frame right after a push is the same whichever way it pushed, and the
    # push appears one frame later. Without this the model has to find that action in an earlier
    # frame's tokens through attention.
    prev_actions: int = 0
    # "block_causal": every block attends over all tokens of its frame and the earlier frames.
    # "factorised": blocks alternate spatial attention (the frame's own tokens) and causal temporal
    # attention (the same patch position in the earlier frames), as in ST-DiT / Latte / Oasis.
    attention: str = "block_causal"
    # > 0: that many residual 3x3 convolutions at latent resolution after the transformer, over its
    # output and features, the noisy frame and its previous frames (LocalHead). Patch tokens are slow
    # to learn small shifts inside and across patches (a moving ball); convolutions learn them in a
    # few hundred steps (docs/results.md, "Session 7"). 0 keeps the plain DiT output layer.
    local_layers: int = 0
    local_channels: int = 64
    local_features: int = 16  # transformer features per latent position handed to the convolutions

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {ATTENTION_KINDS}")
        if self.size not in DIT_SIZES:
            raise ValueError(f"unknown dynamics size {self.size!r}; choose one of {list(DIT_SIZES)}")
        dim, depth, heads = DIT_SIZES[self.size]
        self.dim = self.dim or dim
        self.depth = self.depth or depth
        self.heads = self.heads or heads
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.local_layers < 0 or self.local_channels % 8 or self.local_features < 1:
            raise ValueError(
                "local head: local_layers must be >= 0, local_channels a multiple of 8 (group norm) and "
                f"local_features >= 1, got {self.local_layers}, {self.local_channels}, {self.local_features}"
            )
        if not 0 <= self.prev_actions < self.context:
            raise ValueError(
                f"prev_actions must be between 0 and the context - 1 ({self.context - 1}), got {self.prev_actions}"
            )
        if not 1 <= self.prev_frames <= self.context:
            raise ValueError(
                f"prev_frames must be between 1 and the context ({self.context}), got {self.prev_frames}"
            )


ATTENTION_IMPLS = ("sdpa", "math")
_attention_impl = "sdpa"


def set_attention_impl(impl: str) -> None:
    """``"sdpa"``: PyTorch's fused ``scaled_dot_product_attention`` (the default); ``"math"``: the
    same attention written out (softmax of ``QK^T``), kept to measure what fusing buys."""
    global _attention_impl
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; choose one of {ATTENTION_IMPLS}")
    _attention_impl = impl


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    if _attention_impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def previous_frames(
    seq: torch.Tensor, c_noise: torch.Tensor, k: int, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` frames before each frame of ``seq[:, start:]``, newest first: ``(b, t, k, ...)``, and
    their noise levels ``(b, t, k)``; zeros at ``NO_PREV_C_NOISE`` where a sequence has none."""
    b, length = c_noise.shape
    pad = torch.zeros((b, k, *seq.shape[2:]), dtype=seq.dtype, device=seq.device)
    seq = torch.cat([pad, seq], dim=1)  # frame j now at j + k
    c_noise = torch.cat([torch.full_like(c_noise[:, :1], NO_PREV_C_NOISE).expand(b, k), c_noise], dim=1)
    frames = [seq[:, k - 1 - i + start : k - 1 - i + length] for i in range(k)]
    noise = [c_noise[:, k - 1 - i + start : k - 1 - i + length] for i in range(k)]
    return torch.stack(frames, dim=2), torch.stack(noise, dim=2)


def earlier_actions(
    actions: torch.Tensor, valid: torch.Tensor, k: int, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` actions before the one that led to each frame of ``actions[:, start:]``, newest first:
    ``(b, t, k, ...)``, and their validity ``(b, t, k)`` (False where the sequence has none)."""
    b, length = valid.shape
    pad = torch.zeros((b, k, *actions.shape[2:]), dtype=actions.dtype, device=actions.device)
    actions = torch.cat([pad, actions], dim=1)  # frame j's own action now at j + k
    valid = torch.cat([torch.zeros_like(valid[:, :1]).expand(b, k), valid], dim=1)
    picks = [slice(k - i + start, k - i + length) for i in range(1, k + 1)]
    return torch.stack([actions[:, s] for s in picks], 2), torch.stack([valid[:, s] for s in picks], 2)


def block_masks(frame_mask: torch.Tensor, n: int) -> dict[str, torch.Tensor | None]:
    """Which frame may see which ``(t, t)`` -> the attention mask of each block kind, ``n`` tokens a frame."""
    return {
        "full": frame_mask.repeat_interleave(n, 0).repeat_interleave(n, 1),  # (t*n, t*n)
        "temporal": frame_mask,
        "spatial": None,
    }


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class NoiseEmbedder(nn.Module):
    """Fourier features of the preconditioned noise level, then an MLP."""

    def __init__(self, dim: int, freqs: int = 128) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(freqs // 2) * 4.0, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * c_noise[..., None] * self.weight  # (..., freqs/2)
        return self.mlp(torch.cat([f.cos(), f.sin()], dim=-1))


class ActionEmbedder(nn.Module):
    """Embeds the action that led to each frame; frames with no such action get a learned 'none'."""

    def __init__(self, action_space: dict, dim: int) -> None:
        super().__init__()
        self.discrete = action_space["type"] == "Discrete"
        if self.discrete:
            self.n = int(action_space["n"])
            self.start = int(action_space.get("start", 0))
            self.emb = nn.Embedding(self.n + 1, dim)
        else:
            self.action_dim = int(math.prod(action_space["shape"]))
            self.mlp = nn.Sequential(nn.Linear(self.action_dim + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, actions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """actions ``(B, T)`` int or ``(B, T, A)`` float; valid ``(B, T)`` bool -> ``(B, T, dim)``."""
        if self.discrete:
            idx = (actions.long() - self.start).clamp(0, self.n - 1)
            return self.emb(torch.where(valid, idx, torch.full_like(idx, self.n)))
        a = actions.float().flatten(2) * valid[..., None]
        return self.mlp(torch.cat([a, (~valid[..., None]).float()], dim=-1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (b, heads, n, dh)
        # normalised in fp32 (under bf16 autocast too: a mixed-dtype RMSNorm has no fused kernel)
        return self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype), v

    def forward(
        self,
        x: torch.Tensor,  # (b, t*n, d)
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        kind: str = "full",
        frames: int = 1,
    ) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)  # (b, heads, t*n, dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        b, heads, tn, dh = q.shape
        t, n = frames, tn // frames
        if kind == "spatial":  # each frame on its own: (b*t, heads, n, dh)
            q, k, v = (z.view(b, heads, t, n, dh).transpose(1, 2).flatten(0, 1) for z in (q, k, v))
        elif kind == "temporal":  # each patch position on its own: (b*n, heads, t, dh)
            q, k, v = (z.view(b, heads, t, n, dh).permute(0, 3, 1, 2, 4).flatten(0, 1) for z in (q, k, v))
        out = attend(q, k, v, attn_mask=mask)
        if kind == "spatial":
            out = out.view(b, t, heads, n, dh).transpose(1, 2)
        elif kind == "temporal":
            out = out.view(b, n, heads, t, dh).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(b, heads, tn, dh).transpose(1, 2).flatten(2))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block; ``kind`` is what its attention sees: "full" (the frame and the
    earlier ones), "spatial" (the frame only) or "temporal" (its patch position in earlier frames)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kind: str = "full") -> None:
        super().__init__()
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self,
        x: torch.Tensor,  # (b, t, n, d)
        c: torch.Tensor,  # (b, t, d)
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int | None = 0,
        write: bool = False,
    ) -> torch.Tensor:
        b, t, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c)[:, :, None].chunk(6, dim=-1)  # (b, t, 1, d) each
        h = modulate(self.norm1(x), sh1, sc1).flatten(1, 2)  # (b, t*n, d)
        if cache is None:
            a = self.attn(h, *rope, mask, self.kind, t)
        else:
            a = self._cached_attention(h, cache, layer, write)
        x = x + g1 * a.view(b, t, n, d)
        x = x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x

    def _cached_attention(
        self, h: torch.Tensor, cache: KVCache, layer: int | None, write: bool
    ) -> torch.Tensor:
        q, k, v = self.attn.qkv_heads(h)  # (b, heads, n, dh): the new frame only
        if self.kind == "spatial":  # nothing from the past: no cache
            cos, sin = cache.new_frame_rope()
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            out = attend(q, k, v)
            return self.attn.proj(out.transpose(1, 2).flatten(2))
        keys, values, key_mask, (cos, sin) = cache.context(layer, k, v)  # (b, heads, keys, dh)
        q = apply_rope(q, cos, sin)
        if self.kind == "temporal":  # each patch position attends to its own past: (b*n, heads, ., dh)
            b, heads, n, dh = q.shape
            q = q.permute(0, 2, 1, 3).reshape(b * n, heads, 1, dh)
            keys, values = (
                z.view(b, heads, -1, n, dh).permute(0, 3, 1, 2, 4).flatten(0, 1) for z in (keys, values)
            )
            if key_mask is not None:  # (b, 1, 1, frames*n) -> (b*n, 1, 1, frames)
                key_mask = key_mask.view(b, 1, 1, -1, n).permute(0, 4, 1, 2, 3).flatten(0, 1)
            out = attend(q, keys, values, attn_mask=key_mask)  # (b*n, heads, 1, dh)
            out = out.view(b, n, heads, dh).transpose(1, 2)
        else:
            out = attend(q, keys, values, attn_mask=key_mask)  # (b, heads, n, dh)
        if write:
            cache.write(layer)
        return self.attn.proj(out.transpose(1, 2).flatten(2))


class LocalHead(nn.Module):
    """Residual 3x3 convolutions at latent resolution, conditioned (FiLM) on the frame's noise level,
    action and previous frames' noise levels. Reads ``(b, t, inputs, h, w)``, returns a correction to
    the transformer's output ``(b, t, c, h, w)``; starts at zero."""

    def __init__(self, inputs: int, out: int, channels: int, layers: int, cond_dim: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(inputs, channels, 3, padding=1)
        self.norms = nn.ModuleList(nn.GroupNorm(8, channels, affine=False) for _ in range(layers))
        self.films = nn.ModuleList(nn.Linear(cond_dim, 2 * channels) for _ in range(layers))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers))
        self.out = nn.Conv2d(channels, out, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        h, c = self.inp(x.flatten(0, 1)), F.silu(cond.flatten(0, 1))  # (b*t, ch, h, w), (b*t, d)
        for norm, film, conv in zip(self.norms, self.films, self.convs, strict=True):
            scale, shift = film(c)[:, :, None, None].chunk(2, dim=1)
            h = h + conv(F.silu(modulate(norm(h), shift, scale)))
        return self.out(F.silu(h)).unflatten(0, (b, t))


class DiT(nn.Module):
    """Block-causal diffusion transformer over latent frames, with reward and termination heads."""

    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p, c = cfg.dim, cfg.patch_size, cfg.latent_channels
        self.n_prev = cfg.prev_frames if cfg.prev_frame_input else 0
        self.patch_in = nn.Linear(c * p * p * (1 + self.n_prev), d)
        self.noise_emb = NoiseEmbedder(d)
        # how noisy the previous frame (the patch's second part) is: trust it when it is clean
        self.prev_noise_emb = NoiseEmbedder(d) if cfg.prev_frame_input else None
        # the same for the frames before it (prev_frames > 1)
        self.older_noise_emb = nn.ModuleList(NoiseEmbedder(d) for _ in range(self.n_prev - 1))
        self.action_emb = ActionEmbedder(cfg.action_space, d)
        # the actions before it, each lag its own embedding (and its own 'none')
        self.earlier_action_emb = nn.ModuleList(
            ActionEmbedder(cfg.action_space, d) for _ in range(cfg.prev_actions)
        )
        kinds = ["full"] * cfg.depth
        if cfg.attention == "factorised":
            kinds = ["spatial" if i % 2 == 0 else "temporal" for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.heads, cfg.mlp_ratio, kind) for kind in kinds])
        # blocks that look at earlier frames keep keys/values in the rollout cache; this is their slot
        needs = [kind != "spatial" for kind in kinds]
        self.cache_slot = [sum(needs[:i]) if need else None for i, need in enumerate(needs)]
        self.cache_layers = sum(needs)
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.patch_out = nn.Linear(d, c * p * p)
        # reward and termination of the transition into each frame, read from its pooled tokens
        self.reward_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
        self.term_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
        self.local_head = None
        if cfg.local_layers > 0:
            f = cfg.local_features
            self.feature_out = nn.Linear(d, f * p * p)
            inputs = f + c * (2 + self.n_prev)  # features, transformer output, noisy frame, previous ones
            self.local_head = LocalHead(inputs, c, cfg.local_channels, cfg.local_layers, d)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.noise_emb.mlp[0].weight, std=0.02)
        nn.init.normal_(self.noise_emb.mlp[2].weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for m in (self.ada_out[-1], self.patch_out, self.reward_head[-1], self.term_head[-1]):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if self.local_head is not None:  # starts as the plain transformer output
            nn.init.zeros_(self.local_head.out.weight)
            nn.init.zeros_(self.local_head.out.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch size {p}")
        x = x.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # (b, t, h/p, w/p, c, p, p)
        return x.flatten(4).flatten(2, 3)  # (b, t, n, c*p*p)

    def unpatchify(self, x: torch.Tensor, h: int, w: int, channels: int | None = None) -> torch.Tensor:
        b, t, n, _ = x.shape
        p, c = self.cfg.patch_size, channels or self.cfg.latent_channels
        x = x.reshape(b, t, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # (b, t, c, h/p, p, w/p, p)
        return x.reshape(b, t, c, h, w)

    def _embed(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """``x`` ``(b, t, c, h, w)``, ``prev`` ``(b, t, k, c, h, w)`` its previous frames, newest first."""
        patches = [self.patchify(x)]  # (b, t, n, c*p*p)
        patches += [self.patchify(prev[:, :, i]) for i in range(self.n_prev)]
        return self.patch_in(torch.cat(patches, dim=-1))  # (b, t, n, (1+k)*c*p*p)

    def _condition(
        self,
        c_noise: torch.Tensor,
        actions: torch.Tensor,
        valid: torch.Tensor,
        prev_c_noise: torch.Tensor | None,
        earlier: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-frame conditioning ``(b, t, d)``; ``earlier``: the frames' earlier actions and their
        validity (:func:`earlier_actions`), by default taken from ``actions`` itself."""
        cond = self.noise_emb(c_noise) + self.action_emb(actions, valid)  # (b, t, d)
        if self.earlier_action_emb:
            acts, ok = (
                earlier if earlier is not None else earlier_actions(actions, valid, self.cfg.prev_actions)
            )
            for i, emb in enumerate(self.earlier_action_emb):
                cond = cond + emb(acts[:, :, i], ok[:, :, i])
        if self.prev_noise_emb is not None:  # prev_c_noise (b, t, k), newest first
            cond = cond + self.prev_noise_emb(prev_c_noise[..., 0])
            for i, emb in enumerate(self.older_noise_emb, start=1):
                cond = cond + emb(prev_c_noise[..., i])
        return cond

    def _output(self, x: torch.Tensor, c: torch.Tensor, frames: torch.Tensor, prev: torch.Tensor):
        """Tokens ``(b, t, n, d)`` -> output, reward, termination logit; ``frames`` ``(b, t, c, h, w)``
        are the noisy inputs and ``prev`` ``(b, t, k, c, h, w)`` their previous frames (local head)."""
        h, w = frames.shape[-2:]
        shift, scale = self.ada_out(c)[:, :, None].chunk(2, dim=-1)  # (b, t, 1, d)
        x = self.norm_out(x)  # (b, t, n, d)
        mod = modulate(x, shift, scale)
        out = self.unpatchify(self.patch_out(mod), h, w)  # (b, t, c, h, w)
        if self.local_head is not None:
            feats = self.feature_out(mod)  # (b, t, n, f*p*p)
            feats = self.unpatchify(feats, h, w, channels=self.cfg.local_features)
            inputs = [feats, out, frames.to(out.dtype)] + [
                prev[:, :, i].to(out.dtype) for i in range(self.n_prev)
            ]
            out = out + self.local_head(torch.cat(inputs, dim=2), c)
        pooled = x.mean(dim=2)  # (b, t, d)
        return out, self.reward_head(pooled).squeeze(-1), self.term_head(pooled).squeeze(-1)

    def forward(
        self,
        x: torch.Tensor,  # (b, t, c, h, w) preconditioned noisy latents
        c_noise: torch.Tensor,  # (b, t)
        actions: torch.Tensor,  # (b, t) or (b, t, a): the action that led to each frame
        valid: torch.Tensor,  # (b, t) bool: False where a frame has no previous action
        prev: torch.Tensor | None = None,  # (b, t, k, c, h, w) each frame's previous frames (default: x's)
        prev_c_noise: torch.Tensor | None = None,  # (b, t, k)
        key_valid: torch.Tensor | None = None,  # (b, t) bool: False for padding frames nobody may see
        earlier: tuple[torch.Tensor, torch.Tensor] | None = None,  # earlier actions (default: from actions)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All frames at once, block-causally. Returns (output (b,t,c,h,w), reward (b,t), term logit (b,t))."""
        b, t, _, h, w = x.shape
        p = self.cfg.patch_size
        if prev is None:
            prev, prev_c_noise = previous_frames(x, c_noise, max(self.n_prev, 1))  # (b, t, k, ...)
        tokens = self._embed(x, prev)  # (b, t, n, d)
        n = tokens.shape[2]
        cond = self._condition(c_noise, actions, valid, prev_c_noise, earlier)  # (b, t, d)
        rope = rope_angles(t, h // p, w // p, self.cfg.dim // self.cfg.heads, device=x.device)
        # a token sees its own frame and the context - 1 frames before it (exactly what the cache keeps)
        frame = torch.arange(t, device=x.device)
        age = frame[:, None] - frame[None, :]  # (t, t)
        frame_mask = (age >= 0) & (age < self.cfg.context)  # (t, t)
        if key_valid is None:
            masks = block_masks(frame_mask, n)
        else:  # padding frames are hidden from everyone but themselves (no empty softmax rows)
            eye = torch.eye(t, dtype=torch.bool, device=x.device)
            fm = frame_mask & (key_valid[:, None, :] | eye)  # (b, t, t)
            masks = {
                "full": fm.repeat_interleave(n, 1).repeat_interleave(n, 2)[:, None],  # (b, 1, t*n, t*n)
                "temporal": fm[:, None, None].expand(b, n, 1, t, t).flatten(0, 1),  # (b*n, 1, t, t)
                "spatial": None,
            }
        for block in self.blocks:
            tokens = block(tokens, cond, rope, masks[block.kind])
        return self._output(tokens, cond, x, prev)

    def forward_dense(
        self,
        context: torch.Tensor,  # (b, t, c, h, w) preconditioned frames at context noise levels
        context_c_noise: torch.Tensor,  # (b, t)
        noisy: torch.Tensor,  # (b, t, c, h, w) preconditioned frames at training noise levels
        noisy_c_noise: torch.Tensor,  # (b, t)
        actions: torch.Tensor,  # (b, t) or (b, t, a)
        valid: torch.Tensor,  # (b, t)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing with a target at every frame: a noisy copy of each frame attends to itself
        and to the context copies of the frames before it, exactly what the new frame of a rollout
        sees. The context copies attend block-causally among themselves (as ``forward``). Costs two
        windows of tokens and trains ``t`` frames where ``forward`` with a teacher-forced window
        trains one. Returns (output, reward, term logit) of the noisy copies and of the context
        copies, concatenated along time: ``(b, 2t, ...)``, context first."""
        b, t, _, h, w = context.shape
        p = self.cfg.patch_size
        prev, prev_c_noise = previous_frames(context, context_c_noise, max(self.n_prev, 1))
        tokens = torch.cat([self._embed(context, prev), self._embed(noisy, prev)], dim=1)  # (b, 2t, n, d)
        n = tokens.shape[2]
        cond = torch.cat(
            [
                self._condition(context_c_noise, actions, valid, prev_c_noise),
                self._condition(noisy_c_noise, actions, valid, prev_c_noise),
            ],
            dim=1,
        )  # (b, 2t, d)
        cos, sin = rope_angles(t, h // p, w // p, self.cfg.dim // self.cfg.heads, device=context.device)
        rope = (torch.cat([cos, cos]), torch.cat([sin, sin]))  # a noisy copy sits at its frame's time
        frame = torch.arange(t, device=context.device)
        age = frame[:, None] - frame[None, :]  # (t, t): query frame - key frame
        sees_context = (age >= 0) & (age < self.cfg.context)
        eye = torch.eye(t, dtype=torch.bool, device=context.device)
        frame_mask = torch.cat(
            [
                torch.cat([sees_context, torch.zeros_like(eye)], dim=1),  # context rows
                torch.cat([sees_context & ~eye, eye], dim=1),  # noisy rows: earlier context + itself
            ],
            dim=0,
        )  # (2t, 2t)
        masks = block_masks(frame_mask, n)
        for block in self.blocks:
            tokens = block(tokens, cond, rope, masks[block.kind])
        return self._output(tokens, cond, torch.cat([context, noisy], dim=1), torch.cat([prev, prev], dim=1))

    @staticmethod
    def _history_and_new(
        x: torch.Tensor, c_noise: torch.Tensor, cache: KVCache, keep: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cache's history of inputs (its last ``keep`` frames; absent ones at ``NO_PREV_C_NOISE``)
        with the new frame appended: ``(b, keep + 1, ...)`` and ``(b, keep + 1)``."""
        n = keep or cache.window
        hist = {k: v[:, -n:] for k, v in cache.history.items()}
        filled = cache.history_filled[:, -n:]
        hist_c_noise = torch.where(filled, hist["c_noise"], torch.full_like(hist["c_noise"], NO_PREV_C_NOISE))
        seq = torch.cat([hist["x"], x.to(hist["x"].dtype)], dim=1)
        return seq, torch.cat([hist_c_noise, c_noise.to(hist_c_noise.dtype)], dim=1)

    def _cached_previous(
        self, x: torch.Tensor, c_noise: torch.Tensor, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new frame's previous frames ``(b, 1, k, ...)`` and noise levels from the cache's history."""
        k = max(self.n_prev, 1)
        if cache.history is None:  # nothing written since the cache was made
            return previous_frames(x, c_noise, k)
        seq, seq_c_noise = self._history_and_new(x, c_noise, cache, keep=k)
        return previous_frames(seq, seq_c_noise, k, start=k)

    def _cached_earlier(
        self, actions: torch.Tensor, valid: torch.Tensor, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The new frame's earlier actions ``(b, 1, k, ...)`` and validity from the cache's history."""
        k = self.cfg.prev_actions
        if k == 0:
            return None
        if cache.history is None:
            return earlier_actions(actions, valid, k)
        hist_a, hist_v = cache.history["actions"][:, -k:], cache.history["valid"][:, -k:]
        hist_v = hist_v & cache.history_filled[:, -k:]
        seq = torch.cat([hist_a, actions.to(hist_a.dtype)], dim=1)
        return earlier_actions(seq, torch.cat([hist_v, valid], dim=1), k, start=k)

    def forward_cached(
        self,
        x: torch.Tensor,  # (b, 1, c, h, w) the new frame, preconditioned
        c_noise: torch.Tensor,  # (b, 1)
        actions: torch.Tensor,  # (b, 1) or (b, 1, a)
        valid: torch.Tensor,  # (b, 1)
        cache: KVCache,
        write: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new frame attending to the cached context (and itself); ``write`` adds it to the cache."""
        prev, prev_c_noise = self._cached_previous(x, c_noise, cache)
        tokens = self._embed(x, prev)  # (b, 1, n, d)
        cond = self._condition(
            c_noise, actions, valid, prev_c_noise, self._cached_earlier(actions, valid, cache)
        )
        for block, slot in zip(self.blocks, self.cache_slot, strict=True):
            tokens = block(tokens, cond, None, None, cache=cache, layer=slot, write=write)
        if write:
            cache.advance(x, c_noise, actions, valid)
        return self._output(tokens, cond, x, prev)

    def forward_window(
        self,
        x: torch.Tensor,  # (b, 1, c, h, w) the new frame, preconditioned
        c_noise: torch.Tensor,  # (b, 1)
        actions: torch.Tensor,  # (b, 1) or (b, 1, a)
        valid: torch.Tensor,  # (b, 1)
        cache: KVCache,
        write: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :meth:`forward_cached` computes, without cached keys/values: the whole window of the
        last ``context - 1`` frames (from ``cache.history``) is run again with the new one. Costs
        ``context`` times the tokens; the reference the cache is measured against."""
        if cache.history is None:  # nothing written yet: the new frame alone
            prev, prev_c_noise = self._cached_previous(x, c_noise, cache)
            out = self.forward(x, c_noise, actions, valid, prev=prev, prev_c_noise=prev_c_noise)
        else:
            hist, filled = cache.history, cache.history_filled  # (b, context, ...), oldest first

            def window(key: str, new: torch.Tensor) -> torch.Tensor:
                return torch.cat([hist[key][:, 1:], new.to(hist[key].dtype)], dim=1)

            # each window frame's previous frames: the ones before it in the history (frames older
            # than the history are gone and count as absent: with prev_frames > 1 the oldest window
            # frames then differ from what the cache saw)
            seq, seq_c_noise = self._history_and_new(x, c_noise, cache)
            prev, prev_c_noise = previous_frames(seq, seq_c_noise, max(self.n_prev, 1), start=1)
            key_valid = torch.cat([filled[:, 1:], torch.ones_like(filled[:, :1])], dim=1)
            earlier = None
            if self.cfg.prev_actions:  # like the frames: the ones before the window come from the history
                seq_a = torch.cat([hist["actions"], actions.to(hist["actions"].dtype)], dim=1)
                seq_v = torch.cat([hist["valid"] & filled, valid], dim=1)
                earlier = earlier_actions(seq_a, seq_v, self.cfg.prev_actions, start=1)
            out = self.forward(
                window("x", x),
                window("c_noise", c_noise),
                window("actions", actions),
                window("valid", valid),
                prev=prev,
                prev_c_noise=prev_c_noise,
                key_valid=key_valid,
                earlier=earlier,
            )
            out = tuple(o[:, -1:] for o in out)
        if write:
            cache.advance(x, c_noise, actions, valid)
            cache.stale = True  # its keys/values never saw this frame
        return out
