"""A learned state readout for worlds without flat colours to track (e.g. CartPole through its pixels).

A small CNN reads the true state off the last ``context`` frames (more than one, so velocities can be
seen) and is trained on real ``(frames, state)`` pairs from the world. Its error on held-out real frames is its
*floor*: a dream's states read by it can be trusted only to that precision. The readout then turns
any video of the world into a state trajectory that the comparison probes can use.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ReadoutConfig:
    """Readout network and training.

    Attributes:
        state_key: key of ``info["state"]`` to read (PixelWorld: ``"obs"``, the wrapped env's state).
        context: frames per input; the state read is the last frame's.
        width: channels of the first conv layer.
        epochs, batch, lr: training; ``val_fraction``: share of episodes held out for the floor.
    """

    state_key: str = "obs"
    context: int = 2
    width: int = 16
    epochs: int = 20
    batch: int = 64
    lr: float = 2e-3
    val_fraction: float = 0.2
    seed: int = 0


class StateReadout(nn.Module):
    """``frames (b, context, H, W, 3)`` uint8 -> ``state (b, d)`` in world units (normalised inside).

    Three stride-2 convolutions, then a flatten rather than a global pool: where things are in the
    image *is* the state.
    """

    def __init__(
        self, dim: int, frame_size: tuple[int, int] = (64, 64), width: int = 16, context: int = 2
    ) -> None:
        super().__init__()
        w = width
        self.context = context
        self.net = nn.Sequential(
            nn.Conv2d(3 * context, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
        )  # fmt: skip
        h8, w8 = frame_size[0] // 8, frame_size[1] // 8
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * h8 * w8, 128), nn.SiLU(), nn.Linear(128, dim)
        )
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = frames.shape
        x = frames.float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)  # (b, 3t, H, W)
        return self.head(self.net(x)) * self.std + self.mean  # (b, d)


def windows(
    frames: np.ndarray, states: np.ndarray | None = None, context: int = 2
) -> tuple[np.ndarray, np.ndarray | None]:
    """Episode ``frames (T, H, W, 3)`` -> inputs ``(T-c+1, c, H, W, 3)`` and targets ``states[c-1:]``."""
    x = np.stack([frames[i : len(frames) - context + 1 + i] for i in range(context)], axis=1)
    return x, None if states is None else np.asarray(states[context - 1 :], np.float32)


def collect(
    world_id: str, episodes: int, steps: int, seed: int = 0, **params: Any
) -> list[dict[str, np.ndarray]]:
    """Real episodes ``{"frames", "states"}`` with random actions (states: ``info["state"]`` dicts)."""
    import gymnasium as gym

    from simworld.registration import register_envs

    register_envs()
    env = gym.make(world_id, **params)
    env.action_space.seed(seed)
    out = []
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        frames, states = [obs], [info["state"]]
        for _ in range(steps):
            obs, _, term, trunc, info = env.step(env.action_space.sample())
            frames.append(obs)
            states.append(info["state"])
            if term or trunc:
                break
        out.append({"frames": np.stack(frames), "states": states})
    env.close()
    return out


def store_episodes(store: Any, key: str = "obs") -> list[dict[str, Any]]:
    """An episode store's episodes as :func:`collect` returns them (their recorded ``state/<key>``):
    a readout learnt from frames already collected costs no new real frames."""
    from simworld.data.store import EpisodeStore

    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    if key not in store.meta.state_keys:
        raise ValueError(
            f"{store.root} records no state/{key} to learn a readout of (it has {store.meta.state_keys})"
        )
    return [
        {
            "frames": store.read_array(eid, "frames"),
            "states": [{key: s} for s in store.read_array(eid, f"state/{key}")],
        }
        for eid in store.episode_ids
    ]


def _dataset(episodes: list[dict[str, Any]], key: str, context: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for ep in episodes:
        s = np.stack([np.asarray(st[key], np.float32).reshape(-1) for st in ep["states"]])
        x, y = windows(ep["frames"], s, context)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@torch.no_grad()
def predict(model: StateReadout, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """States ``(T-c+1, d)`` read off a video ``(T, H, W, 3)``: one per frame from the ``context``-th on."""
    model.eval()
    x, _ = windows(frames, context=model.context)
    out = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out)


def readout_bounds(
    readout: Any, bounds: dict[int, float] | None
) -> tuple[StateReadout | None, dict[int, float] | None]:
    """Check a termination readout and its bounds (both or neither); loads a readout folder."""
    if (readout is None) != (bounds is None):
        raise ValueError("termination_readout and termination_bounds go together: give both or neither")
    if readout is None:
        return None, None
    model = (readout if isinstance(readout, StateReadout) else load_readout(readout)[0]).eval()
    if model.context > 2:
        raise ValueError(f"a termination readout reads 1 or 2 frames, this one reads {model.context}")
    if not bounds:
        raise ValueError("termination_bounds is empty: give {state index: bound}")
    out = {}
    for k, v in bounds.items():
        i, b = int(k), float(v)
        if not 0 <= i < model.dim:
            raise ValueError(
                f"termination_bounds index {i} is not a state dimension (the readout has {model.dim})"
            )
        if not b > 0:
            raise ValueError(f"termination_bounds[{i}] must be > 0, got {v}")
        out[i] = b
    return model, out


@torch.no_grad()
def read_pairs(model: StateReadout, prev: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``(n, dim)``: the state ``model`` reads off each transition ``prev -> new`` (uint8 ``(n, H, W, 3)``)."""
    x = np.stack([prev, new], axis=1)[:, 2 - model.context :]
    return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))).numpy()


def out_of_bounds(
    model: StateReadout, bounds: dict[int, float], prev: np.ndarray, new: np.ndarray
) -> np.ndarray:
    """``(n,)`` bool: the state read off frames ``prev -> new`` (each ``(n, H, W, 3)``) leaves ``bounds``."""
    s = read_pairs(model, prev, new)
    return np.any([np.abs(s[:, i]) > b for i, b in bounds.items()], axis=0)


def evaluate(model: StateReadout, episodes: list[dict[str, Any]], key: str = "obs") -> dict[str, Any]:
    """The readout's error on real episodes: RMSE per state dimension and overall (world units)."""
    x, y = _dataset(episodes, key, model.context)
    with torch.no_grad():
        model.eval()
        pred = np.concatenate(
            [model(torch.from_numpy(x[i : i + 256])).numpy() for i in range(0, len(x), 256)]
        )
    rmse = np.sqrt(((pred - y) ** 2).mean(0))
    return {"rmse": rmse.tolist(), "rmse_mean": float(rmse.mean()), "std": y.std(0).tolist(), "pairs": len(x)}


def train_readout(
    episodes: list[dict[str, Any]], cfg: ReadoutConfig | None = None, log: Any = None
) -> tuple[StateReadout, dict[str, Any]]:
    """Train a readout on real episodes; return it and its floor (error on held-out episodes).

    Returns:
        ``(model, {"floor": evaluate(...) on the held-out episodes, "train": ... on the rest})``.
    """
    cfg = cfg or ReadoutConfig()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    order = rng.permutation(len(episodes))
    n_val = max(1, int(round(cfg.val_fraction * len(episodes)))) if len(episodes) > 1 else 0
    val = [episodes[i] for i in order[:n_val]]
    train = [episodes[i] for i in order[n_val:]] or val
    x, y = _dataset(train, cfg.state_key, cfg.context)
    model = StateReadout(y.shape[1], tuple(x.shape[2:4]), cfg.width, cfg.context)
    model.mean.copy_(torch.from_numpy(y.mean(0)))
    model.std.copy_(torch.from_numpy(y.std(0) + 1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * math.ceil(len(x) / cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 1))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), cfg.batch):
            idx = perm[i : i + cfg.batch]
            loss = F.mse_loss((model(xt[idx]) - model.mean) / model.std, (yt[idx] - model.mean) / model.std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(xt):.4f}")
    report = {
        "floor": evaluate(model, val or train, cfg.state_key),
        "train": evaluate(model, train, cfg.state_key),
    }
    return model, report


def save_readout(
    model: StateReadout,
    cfg: ReadoutConfig,
    path: str | Path,
    frame_size: tuple[int, int],
    floor: dict | None = None,
    world_id: str | None = None,
) -> Path:
    """Write ``readout.safetensors`` and ``readout.json`` (config, state size, floor and the world it
    reads) into ``path``."""
    from simworld.checkpoint import atomic_save_tensors, atomic_write_text

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(path / "readout.safetensors", dict(model.state_dict()))
    meta = {
        "config": asdict(cfg),
        "dim": model.dim,
        "frame_size": list(frame_size),
        "floor": floor,
        "world_id": world_id,
    }
    atomic_write_text(path / "readout.json", json.dumps(meta, indent=1))
    return path


def load_readout(path: str | Path) -> tuple[StateReadout, dict[str, Any]]:
    """Rebuild a readout saved by :func:`save_readout`; returns ``(model, meta)``."""
    from simworld.checkpoint import load_state_strict, load_tensors, read_json

    path = Path(path)
    meta = read_json(path / "readout.json")
    cfg = meta["config"]
    model = StateReadout(meta["dim"], tuple(meta["frame_size"]), cfg["width"], cfg["context"])
    load_state_strict(model, load_tensors(path / "readout.safetensors"), str(path / "readout.safetensors"))
    return model.eval(), meta


def readout_world(path: str | Path) -> dict[str, Any]:
    """The world a saved readout learnt to read, as a world config (its id, at the readout's frame
    size), from its ``readout.json``."""
    from simworld.checkpoint import read_json

    meta = read_json(Path(path) / "readout.json")
    world_id = meta.get("world_id")
    if not world_id:
        raise ValueError(
            f"{path}/readout.json does not record the world it reads: name the world (world=...)"
        )
    name = world_id.rsplit("/", 1)[-1]
    return {
        "name": name,
        "id": world_id,
        "max_episode_steps": None,
        "kwargs": {"frame_size": meta["frame_size"]},
    }


def run_train_readout(c: dict[str, Any]) -> dict[str, Any]:
    """``simworld train-readout``: collect random-action episodes of ``c["world"]``, train a readout,
    save it to ``c["out"]`` and print its floor (held-out RMSE per state dimension, beside the spread)."""
    if c.get("num_threads"):
        torch.set_num_threads(int(c["num_threads"]))
    world = c["world"]
    cfg = ReadoutConfig(**c.get("readout", {}), seed=int(c["seed"]))
    if c.get("store"):  # frames already collected (e.g. a loop's), with their recorded states
        from simworld.data.store import EpisodeStore

        store = EpisodeStore.open(c["store"])
        world = {**world, "id": store.meta.world_id}  # the store's world, whatever world= says
        episodes = store_episodes(store, cfg.state_key)
    else:
        episodes = collect(
            world["id"], int(c["episodes"]), int(c["steps"]), seed=int(c["seed"]), **world.get("kwargs", {})
        )
    if not episodes or not episodes[0]["states"] or cfg.state_key not in episodes[0]["states"][0]:
        raise ValueError(f"{world['id']} reports no info['state'][{cfg.state_key!r}] to learn a readout of")
    model, report = train_readout(episodes, cfg, log=print if c.get("progress", True) else None)
    frame_size = tuple(episodes[0]["frames"].shape[1:3])
    path = save_readout(model, cfg, c["out"], frame_size, report["floor"], world["id"])
    floor = report["floor"]
    print(
        f"readout of {world['id']} ({floor['pairs']} held-out frames): RMSE per dimension "
        + ", ".join(f"{e:.4g}" for e in floor["rmse"])
        + " (spread "
        + ", ".join(f"{e:.4g}" for e in floor["std"])
        + f"); wrote {path}"
    )
    return {"out": str(path), **report}


READOUT_PREFIX = "readout:"  # policy=readout:<folder>: a ReadoutController


def readout_policy_folder(spec: Any) -> str | None:
    """The readout folder a ``"readout:<folder>"`` policy names; None for any other policy."""
    return (
        spec.removeprefix(READOUT_PREFIX)
        if isinstance(spec, str) and spec.startswith(READOUT_PREFIX)
        else None
    )


# world id -> a controller on the state a readout reads (its ``obs`` state key)
_STATE_CONTROLLERS = {"simworld/PixelCartPole-v1": "envs.pixel:cartpole_control"}


class ReadoutController:
    """A policy that sees only frames: a :func:`train_readout` readout reads the state off the last
    two frames and the world's heuristic controller acts on it (``policy=readout:<folder>``).

    No agent learns anything here. It is a yardstick: a competent policy that runs on frames, so
    ``simworld agent eval policy=readout:<folder> dream=<model>`` shows whether a dream rewards
    balancing as the world does. Runs per frame (``reset`` / ``__call__``, as
    :class:`agents.train.FramePolicy`) and on SB3's stacked observations (``predict``).
    """

    def __init__(self, path: str | Path, world_id: str) -> None:
        import importlib

        if world_id not in _STATE_CONTROLLERS:
            raise ValueError(
                f"no state controller for {world_id}: a readout policy runs in {sorted(_STATE_CONTROLLERS)}"
            )
        self.readout, meta = load_readout(path)
        if meta["config"].get("state_key", "obs") != "obs":
            raise ValueError(
                f"{path} reads state key {meta['config']['state_key']!r}; the controller needs 'obs'"
            )
        module, fn = _STATE_CONTROLLERS[world_id].split(":")
        self.control = getattr(importlib.import_module(module), fn)
        self._prev: np.ndarray | None = None

    def _act(self, prev: np.ndarray, new: np.ndarray) -> np.ndarray:
        return np.array([self.control(s) for s in read_pairs(self.readout, prev, new)])

    def reset(self, context: np.ndarray | None = None) -> None:
        """Start an episode; ``context``: frames seen before the first call (its last is the previous)."""
        self._prev = None if context is None or not len(context) else np.asarray(context, np.uint8)[-1]

    def __call__(self, frame: np.ndarray) -> int:
        frame = np.asarray(frame, np.uint8)
        prev = frame if self._prev is None else self._prev  # the first frame: read as standing still
        self._prev = frame
        return int(self._act(prev[None], frame[None])[0])

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's interface on frame-stacked ``(n, 3k, H, W)`` observations: the last two frames."""
        obs = np.asarray(obs, np.uint8)
        new, prev = obs[:, -3:], obs[:, -6:-3] if obs.shape[1] >= 6 else obs[:, -3:]
        prev = np.where(prev.reshape(len(obs), -1).any(1)[:, None, None, None], prev, new)  # zeros: reset
        return self._act(prev.transpose(0, 2, 3, 1), new.transpose(0, 2, 3, 1)), None
