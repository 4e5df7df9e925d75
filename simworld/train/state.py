"""Resumable training state on disk: weights, EMA, optimizer, RNG and step, without pickle.

Everything tensor-valued goes into safetensors files, everything else into ``trainer.json``; the
whole directory is written beside the old one and swapped in with a rename, so an interruption at
any moment leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simworld.checkpoint import (
    CheckpointError,
    atomic_save_tensors,
    load_state_strict,
    load_tensors,
    read_json,
    replace_dir,
)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into flat tensors and JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for key, v in rest["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda{i}"] = s
    np_state = np.random.get_state()
    rest = {
        "python": [list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, rest


def set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = rest["python"]
    random.setstate((3, tuple(py[0]), py[1]))
    n = rest["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    ema: torch.nn.Module | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    atomic_save_tensors(tmp / "model.safetensors", model.state_dict())
    if ema is not None:
        atomic_save_tensors(tmp / "ema.safetensors", ema.state_dict())
    opt_tensors, opt_rest = optimizer_tensors(optimizer)
    atomic_save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    rng_tensors, rng_rest = rng_state()
    atomic_save_tensors(tmp / "rng.safetensors", rng_tensors)
    meta = {"step": step, "optimizer": opt_rest, "rng": rng_rest, "extra": extra or {}}
    (tmp / "trainer.json").write_text(json.dumps(meta))
    replace_dir(tmp, path)


def load_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore everything ``save_training_state`` wrote; returns ``{"step": ..., "extra": ...}``."""
    path = Path(path)
    meta = read_json(path / "trainer.json")
    try:
        load_state_strict(
            model, load_tensors(path / "model.safetensors", device), str(path / "model.safetensors")
        )
        if ema is not None:
            load_state_strict(
                ema, load_tensors(path / "ema.safetensors", device), str(path / "ema.safetensors")
            )
        load_optimizer(optimizer, load_tensors(path / "optimizer.safetensors", device), meta["optimizer"])
        set_rng_state(load_tensors(path / "rng.safetensors"), meta["rng"])
    except KeyError as e:
        raise CheckpointError(f"training checkpoint {path} is incomplete: missing {e}") from e
    return {"step": int(meta["step"]), "extra": meta.get("extra", {})}
