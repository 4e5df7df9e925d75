"""Atomic, pickle-free checkpoint files: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from simworld.data.atomic import atomic_path


def _umask() -> int:
    # mkdtemp creates an owner-only directory; checkpoints should get the usual permissions instead
    mask = os.umask(0)
    os.umask(mask)
    return mask


class CheckpointError(ValueError):
    """A checkpoint that is missing pieces, corrupt, or does not match what loads it."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt or unreadable checkpoint file {path}: {e}") from e


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint config {path}: {e}") from e


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place; the old one is removed only after the swap."""
    final = Path(final)
    os.chmod(tmp, 0o777 & ~_umask())
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` whose errors name the checkpoint and every mismatching tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(f"{source} does not match the model its config describes: " + "; ".join(parts))
    module.load_state_dict(state)
