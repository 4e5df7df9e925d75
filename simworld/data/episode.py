"""One episode of experience: frames, actions, rewards, episode ends, true states and info."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Episode:
    """An episode of ``T`` steps, which has ``T + 1`` frames.

    Step ``t`` takes ``actions[t]`` at ``frames[t]`` and produces ``frames[t + 1]``,
    ``rewards[t]``, ``terminated[t]`` and ``truncated[t]``.

    Attributes:
        frames: ``uint8 (T+1, H, W, 3)`` RGB frames.
        actions: ``(T, *action_shape)``; int64 for Discrete, the Box dtype (float32) for Box.
        rewards: ``float32 (T,)``.
        terminated: ``bool (T,)``; only the last step may be True.
        truncated: ``bool (T,)``; only the last step may be True.
        states: True physical state per frame, each ``float64 (T+1, ...)``. Empty for episodes
            without known state (imported videos).
        info: JSON-serialisable dict (seed, policy, world parameter overrides, ``source``...).
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    states: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        """Number of steps ``T`` (one less than the number of frames)."""
        return int(self.frames.shape[0]) - 1

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def validate(self) -> None:
        """Check every shape, dtype and length against the conventions above.

        Raises:
            ValueError: Naming the offending field, what was expected and what was found.
        """
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"frames must be a uint8 array (T+1, H, W, 3), got {_describe(f)}")
        if f.shape[0] < 1:
            raise ValueError("frames must hold at least one frame (an episode of T steps has T+1 frames)")
        T = self.num_steps
        a = self.actions
        if not isinstance(a, np.ndarray) or a.ndim < 1 or a.shape[0] != T:
            raise ValueError(
                f"actions must have T={T} rows (one per step, frames has T+1), got {_describe(a)}"
            )
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"actions must be integer or floating, got {_describe(a)}")
        for name, dtype in (("rewards", np.float32), ("terminated", np.bool_), ("truncated", np.bool_)):
            x = getattr(self, name)
            if not isinstance(x, np.ndarray) or x.dtype != dtype or x.shape != (T,):
                raise ValueError(f"{name} must be {np.dtype(dtype).name} of shape ({T},), got {_describe(x)}")
        for name in ("terminated", "truncated"):
            x = getattr(self, name)
            if T > 1 and x[:-1].any():
                # An end flag before the last step means two episodes were glued together,
                # typically by a vector env's autoreset.
                t = int(np.flatnonzero(x[:-1])[0])
                raise ValueError(
                    f"{name} is True at step {t} but only the last step ({T - 1}) may end an episode"
                )
        if not isinstance(self.states, dict):
            raise ValueError(f"states must be a dict of arrays, got {type(self.states).__name__}")
        for key, s in self.states.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"state keys must be non-empty strings, got {key!r}")
            if not isinstance(s, np.ndarray) or s.dtype != np.float64 or s.ndim < 1 or s.shape[0] != T + 1:
                raise ValueError(f"states[{key!r}] must be float64 with T+1={T + 1} rows, got {_describe(s)}")
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}")
        try:
            json.dumps(self.info)
        except (TypeError, ValueError) as e:
            raise ValueError(f"info must be JSON-serialisable: {e}") from None


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__
