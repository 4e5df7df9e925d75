"""A preallocated key/value cache so each autoregressive step runs the new frame only.

Buffers hold the keys/values of the last ``context - 1`` frames of every batch element (a ring of
slots) plus one scratch slot for the frame being generated. Keys are stored already rotated at the
frame's absolute index since its reset; RoPE angles are computed in float64, so far-apart positions
stay exact and nothing has to be re-rotated as the window slides. Memory and per-step cost are flat
however long the rollout runs.
"""

from __future__ import annotations

import torch

from simworld.models.rope import apply_rope, grid_positions, rope_tables


class KVCache:
    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        grid: tuple[int, int],
        context: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 frame, got {context}")
        self.layers, self.batch, self.heads, self.head_dim = layers, batch, heads, head_dim
        self.grid, self.window = tuple(grid), context
        self.slots = context - 1  # past frames kept; the last slot is the scratch for the new frame
        self.n = grid[0] * grid[1]
        size = (layers, batch, heads, (self.slots + 1) * self.n, head_dim)
        self.k = torch.zeros(size, device=device, dtype=dtype)
        self.v = torch.zeros(size, device=device, dtype=dtype)
        self.filled = torch.zeros(batch, self.slots, dtype=torch.bool, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)  # frames written since reset
        _, self._y, self._x = grid_positions(1, *grid, device=device)
        self._tables: tuple[torch.Tensor, torch.Tensor] | None = None
        # The inputs of the last ``context`` frames, oldest first: the newest is the previous frame
        # every patch also carries, and a step can recompute its whole window without the cache
        # (DiT.forward_window). Tensors (b, context, ...) once a frame is written.
        self.history: dict[str, torch.Tensor] | None = None
        self.history_filled = torch.zeros(batch, context, dtype=torch.bool, device=device)
        self.stale = False  # set by a step that bypassed the cache: its keys/values miss that frame

    @property
    def device(self) -> torch.device:
        return self.k.device

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget the context of the batch elements in ``mask`` (all if None)."""
        mask = torch.ones(self.batch, dtype=torch.bool, device=self.device) if mask is None else mask
        self.count[mask] = 0
        self.filled[mask] = False
        self.history_filled[mask] = False
        if self.history is not None:
            for value in self.history.values():
                value[mask] = 0
        if bool(mask.all()):
            self.stale = False
        self._tables = None

    def new_frame_rope(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``(b, 1, n, dh/2)`` rotating the new frame's tokens at its absolute position."""
        return self._new_frame_tables()

    def _new_frame_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tables is None:
            t = self.count[:, None].expand(-1, self.n)  # (b, n): the new frame's absolute index
            cos, sin = rope_tables(t, self._y, self._x, self.head_dim)  # (b, n, dh/2)
            self._tables = (cos[:, None], sin[:, None])  # (b, 1, n, dh/2) broadcast over heads
        return self._tables

    def _slot_tokens(self) -> torch.Tensor:
        slot = self.count % max(self.slots, 1)  # (b,)
        return slot[:, None] * self.n + torch.arange(self.n, device=self.device)  # (b, n)

    def context(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor):
        """Keys/values to attend to: the cached frames plus the new one ``(b, heads, n, dh)``.

        Returns ``(keys, values, mask, (cos, sin))``: the mask is None when every slot is filled, and
        ``(cos, sin)`` rotate the new frame's queries.
        """
        cos, sin = self._new_frame_tables()
        scratch = slice(self.slots * self.n, None)
        self.k[layer, :, :, scratch] = apply_rope(k_new, cos, sin).to(self.k.dtype)
        self.v[layer, :, :, scratch] = v_new.to(self.v.dtype)
        mask = None
        if not bool(self.filled.all()):
            keep = torch.cat(
                [
                    self.filled.repeat_interleave(self.n, dim=1),
                    torch.ones(self.batch, self.n, dtype=torch.bool, device=self.device),
                ],
                dim=1,
            )
            mask = keep[:, None, None, :]  # (b, 1, 1, keys)
        return self.k[layer], self.v[layer], mask, (cos, sin)

    def write(self, layer: int) -> None:
        """Keep the new frame's keys/values (now in the scratch slot) as context for later frames."""
        if self.slots == 0:
            return
        idx = self._slot_tokens()[:, None, :, None].expand(-1, self.heads, -1, self.head_dim)
        scratch = slice(self.slots * self.n, None)
        self.k[layer].scatter_(2, idx, self.k[layer, :, :, scratch])
        self.v[layer].scatter_(2, idx, self.v[layer, :, :, scratch])

    @property
    def prev(self) -> torch.Tensor | None:
        """``(b, 1, c, h, w)``: the input of the last frame written (zeros after a reset), or None."""
        return None if self.history is None else self.history["x"][:, -1:]

    def advance(
        self, x: torch.Tensor, c_noise: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor
    ) -> None:
        """Close the step after every layer has written: the new frame (input ``x``, its noise
        level, the action that led to it) becomes context."""
        self._remember(x=x, c_noise=c_noise, actions=actions, valid=valid)
        if self.slots:
            slot = self.count % self.slots
            self.filled[torch.arange(self.batch, device=self.device), slot] = True
        self.count += 1
        self._tables = None

    def _remember(self, **frame: torch.Tensor) -> None:
        """Append one frame's inputs ``(b, 1, ...)`` to the history window, dropping the oldest."""
        if self.history is None:
            self.history = {
                k: torch.zeros((self.batch, self.window, *v.shape[2:]), dtype=v.dtype, device=self.device)
                for k, v in frame.items()
            }
        for k, v in frame.items():
            self.history[k] = torch.cat([self.history[k][:, 1:], v.detach().to(self.history[k].dtype)], dim=1)
        ones = torch.ones(self.batch, 1, dtype=torch.bool, device=self.device)
        self.history_filled = torch.cat([self.history_filled[:, 1:], ones], dim=1)

    def subset(self, idx: torch.Tensor) -> KVCache:
        """A copy holding only the batch elements ``idx`` (e.g. to prefill envs being reset)."""
        sub = KVCache.__new__(KVCache)
        sub.__dict__.update(self.__dict__)
        sub.batch = len(idx)
        sub.k, sub.v = self.k[:, idx].clone(), self.v[:, idx].clone()
        sub.filled, sub.count = self.filled[idx].clone(), self.count[idx].clone()
        sub.history = None if self.history is None else {k: v[idx].clone() for k, v in self.history.items()}
        sub.history_filled = self.history_filled[idx].clone()
        sub._tables = None
        return sub

    def assign(self, idx: torch.Tensor, sub: KVCache) -> None:
        """Copy a subset back into batch elements ``idx``."""
        self.k[:, idx], self.v[:, idx] = sub.k, sub.v
        self.filled[idx], self.count[idx] = sub.filled, sub.count
        if sub.history is not None:
            if self.history is None:
                self.history = {
                    k: torch.zeros((self.batch, *v.shape[1:]), dtype=v.dtype, device=self.device)
                    for k, v in sub.history.items()
                }
            for k, v in sub.history.items():
                self.history[k][idx] = v
        self.history_filled[idx] = sub.history_filled
        if len(idx) == self.batch:  # every element restarted: whatever was stale is gone
            self.stale = sub.stale
        self._tables = None

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
