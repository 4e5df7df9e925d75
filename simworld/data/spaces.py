"""JSON specs for action spaces, and validation of action arrays against a space.

A store records its action space as a plain JSON dict (a *spec*) so that ``meta.json`` stays
human-readable and never needs pickle. Only ``Discrete`` and ``Box`` are supported; those are
the spaces our worlds and the dream expose.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np


def _encode_bound(values: np.ndarray) -> Any:
    """Bounds as JSON: a scalar when uniform (the common case), else nested lists.

    Infinite bounds become the strings ``"inf"`` / ``"-inf"`` because strict JSON has no infinity.
    """

    def one(x: float | int) -> float | int | str:
        if np.issubdtype(values.dtype, np.integer):
            return int(x)
        x = float(x)
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x

    flat = values.reshape(-1)
    if flat.size > 0 and np.all(flat == flat[0]):
        return one(flat[0])
    return np.array([one(x) for x in flat], dtype=object).reshape(values.shape).tolist()


def _decode_bound(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    def one(x: Any) -> float:
        return float(x) if isinstance(x, str) else x

    if isinstance(value, list):
        arr = np.array(np.vectorize(one, otypes=[np.float64])(np.array(value, dtype=object)), dtype=dtype)
    else:
        arr = np.full(shape, one(value), dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"Box bound has shape {arr.shape}, expected {shape}")
    return arr


def space_to_spec(space: gym.Space) -> dict[str, Any]:
    """Describe an action space as a JSON-serialisable dict.

    Args:
        space: A ``gymnasium.spaces.Discrete`` or ``gymnasium.spaces.Box``.

    Returns:
        ``{"type": "Discrete", "n": n, "start": start}`` or
        ``{"type": "Box", "low": ..., "high": ..., "shape": [...], "dtype": "float32"}``. Uniform
        bounds are stored as one number; infinite bounds as ``"inf"`` / ``"-inf"``.

    Raises:
        ValueError: If the space is of another type.
    """
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": _encode_bound(space.low),
            "high": _encode_bound(space.high),
            "shape": [int(s) for s in space.shape],
            "dtype": np.dtype(space.dtype).name,
        }
    raise ValueError(f"unsupported action space {space!r}: only Discrete and Box can be stored")


def spec_to_space(spec: dict[str, Any]) -> gym.Space:
    """Rebuild the gymnasium space described by :func:`space_to_spec`.

    Args:
        spec: A dict produced by :func:`space_to_spec` (e.g. read back from ``meta.json``).

    Returns:
        The equivalent ``Discrete`` or ``Box`` space.

    Raises:
        ValueError: If the spec names another space type or lacks a field.
    """
    kind = spec.get("type") if isinstance(spec, dict) else None
    try:
        if kind == "Discrete":
            return gym.spaces.Discrete(int(spec["n"]), start=int(spec.get("start", 0)))
        if kind == "Box":
            shape = tuple(int(s) for s in spec["shape"])
            dtype = np.dtype(spec.get("dtype", "float32"))
            low = _decode_bound(spec["low"], shape, dtype)
            high = _decode_bound(spec["high"], shape, dtype)
            return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    except KeyError as e:
        raise ValueError(f"action space spec {spec!r} lacks field {e}") from None
    raise ValueError(f"unsupported action space spec {spec!r}: only Discrete and Box can be stored")


def action_dtype(space: gym.Space) -> np.dtype:
    """The dtype actions of ``space`` are stored with: int64 for Discrete, the Box's dtype for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return np.dtype(np.int64)
    if isinstance(space, gym.spaces.Box):
        return np.dtype(space.dtype)
    raise ValueError(f"unsupported action space {space!r}: only Discrete and Box can be stored")


def check_action_array(actions: np.ndarray, space: gym.Space, T: int) -> None:
    """Check that ``actions`` holds ``T`` valid actions of ``space``.

    Args:
        actions: Array of shape ``(T,)`` for Discrete or ``(T, *box.shape)`` for Box.
        space: The action space the actions must belong to.
        T: The expected number of steps.

    Raises:
        ValueError: Naming the expected space, if the shape, dtype kind (integer actions for
            Discrete, actions castable to the Box dtype for Box) or any value is wrong.
    """
    dtype = action_dtype(space)
    if not isinstance(actions, np.ndarray):
        raise ValueError(f"actions must be a numpy array for {space}, got {type(actions).__name__}")
    shape = (T, *space.shape) if isinstance(space, gym.spaces.Box) else (T,)
    if actions.shape != shape:
        raise ValueError(f"actions for {space} must have shape {shape} (T={T}), got {actions.shape}")
    if actions.dtype == np.bool_ or not np.can_cast(actions.dtype, dtype, casting="same_kind"):
        want = "integers" if isinstance(space, gym.spaces.Discrete) else f"castable to {dtype}"
        raise ValueError(f"actions for {space} must be {want}, got dtype {actions.dtype}")
    if T == 0:
        return
    if isinstance(space, gym.spaces.Discrete):
        lo, hi = int(space.start), int(space.start + space.n)
        bad = (actions < lo) | (actions >= hi)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            raise ValueError(f"actions for {space} must lie in [{lo}, {hi}); step {t} has {actions[t]}")
        return
    cast = actions.astype(dtype, copy=False)
    bad = ~np.isfinite(cast) if np.issubdtype(dtype, np.floating) else np.zeros(cast.shape, bool)
    bad |= (cast < space.low) | (cast > space.high)
    if bad.any():
        t = int(np.argwhere(bad)[0][0])
        raise ValueError(f"actions must lie in {space}; step {t} has {actions[t]}")
