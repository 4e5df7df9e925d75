"""Argument and state validation shared by the ground-truth worlds: errors name the bad parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def number(
    name: str, value: Any, low: float | None = None, high: float | None = None, strict: bool = False
) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (strict and value == low)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def int_range(name: str, value: Any, low: int, high: int) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a (low, high) pair, got {value!r}")
    lo, hi = (integer(name, v, low) for v in value)
    if lo > hi or hi > high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


def float_range(name: str, value: Any, positive: bool) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    lo, hi = (number(name, v, low=0.0, strict=positive) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def frame_size(value: Any) -> tuple[int, int]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"frame_size must be a (height, width) pair, got {value!r}")
    h, w = (integer("frame_size", v, 8) for v in value)
    return h, w


def validate_state(state: Any, shapes: dict[str, tuple], max_balls: int = 0) -> dict[str, np.ndarray]:
    """Check keys, shapes and finiteness; return float64 copies. ``"B"`` in a shape means ``max_balls``."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict with keys {sorted(shapes)}, got {type(state).__name__}")
    out = {}
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"state is missing key {key!r}")
        shape = tuple(max_balls if d == "B" else d for d in shape)
        try:
            value = np.array(state[key], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"state[{key!r}] is not numeric: {e}") from e
        if value.shape != shape:
            raise ValueError(f"state[{key!r}] must have shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"state[{key!r}] must be finite, got {value}")
        out[key] = value
    return out
