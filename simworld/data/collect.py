"""Collect episodes from a ground-truth world into an episode store.

Several workers step copies of the world in subprocesses (Gymnasium's ``AsyncVectorEnv``); the
main process owns the store and writes each episode as soon as it ends. Every episode starts
from its own seed, recorded in the episode's info, so any episode can be replayed exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from tqdm.auto import tqdm

from simworld.data.episode import Episode
from simworld.data.spaces import space_to_spec
from simworld.data.store import EpisodeStore, StoreMeta
from simworld.worlds import WorldConfig, make_world

POLICIES = ("random", "heuristic", "epsilon-heuristic")


@dataclass
class CollectConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    out: str = "data/balls"
    episodes: int = 20
    policy: str = "epsilon-heuristic"
    epsilon: float = 0.2  # epsilon-heuristic: chance of a random action at each step
    workers: int = 2
    seed: int = 0
    max_steps: int | None = None  # cap on steps per episode (None: the world's own time limit)
    progress: bool = True


@dataclass
class CollectSummary:
    out: str
    episodes: int
    steps: int
    mean_length: float
    mean_return: float
    seconds: float
    bytes_per_frame: float
    episode_ids: list[int]

    def __str__(self) -> str:
        return (
            f"collected {self.episodes} episodes, {self.steps} steps into {self.out} in {self.seconds:.1f} s "
            f"({self.steps / max(self.seconds, 1e-9):.0f} steps/s); mean length {self.mean_length:.1f}, "
            f"mean return {self.mean_return:.2f}; {self.bytes_per_frame:.0f} bytes/frame on disk"
        )


def sample_action(space: gym.Space, rng: np.random.Generator) -> Any:
    """A uniformly random action from ``space`` drawn from ``rng`` (reproducible per episode)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    if isinstance(space, gym.spaces.Box):
        return rng.uniform(space.low, space.high).astype(space.dtype)
    raise ValueError(f"cannot sample actions from {space}: only Discrete and Box are supported")


class _Recorder:
    """The growing episode of one sub-environment."""

    def __init__(self, obs: np.ndarray, state: dict[str, np.ndarray], seed: int) -> None:
        self.seed = seed
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.frames = [obs]
        self.states = {k: [v] for k, v in state.items()}
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []

    def add(self, action: Any, obs: np.ndarray, reward: float, term: bool, trunc: bool, state: dict) -> None:
        self.actions.append(action)
        self.frames.append(obs)
        self.rewards.append(float(reward))
        self.terminated.append(bool(term))
        self.truncated.append(bool(trunc))
        for k, v in state.items():
            self.states[k].append(v)

    def episode(self, action_space: gym.Space, info: dict[str, Any]) -> Episode:
        dtype = np.int64 if isinstance(action_space, gym.spaces.Discrete) else np.float32
        return Episode(
            frames=np.stack(self.frames).astype(np.uint8),
            actions=np.asarray(self.actions, dtype=dtype).reshape(len(self.actions), *action_space.shape),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=np.asarray(self.truncated, dtype=bool),
            states={k: np.stack(v).astype(np.float64) for k, v in self.states.items()},
            info={**info, "seed": self.seed},
        )


def _env_state(infos: dict, i: int) -> dict[str, np.ndarray]:
    states = infos.get("state", {})
    return {k: np.asarray(v[i]) for k, v in states.items() if not k.startswith("_")}


def store_meta_for_world(world: WorldConfig) -> StoreMeta:
    """The store metadata of a world: its id, parameters, spaces, frame rate and state keys."""
    env = make_world(world)
    try:
        _, info = env.reset(seed=0)
        return StoreMeta(
            world_id=world.id,
            world_params=env.unwrapped.world_params,
            action_space=space_to_spec(env.action_space),
            frame_size=(int(env.observation_space.shape[0]), int(env.observation_space.shape[1])),
            fps=float(env.metadata.get("render_fps", 15)),
            state_keys=sorted(info.get("state", {})),
        )
    finally:
        env.close()


def collect(cfg: CollectConfig) -> CollectSummary:
    """Run ``cfg.policy`` in ``cfg.workers`` copies of the world until ``cfg.episodes`` episodes are stored.

    Episode ``k`` of this run (counting from the number already in the store) is reset with seed
    ``cfg.seed + k_total``, so appending to a store never repeats an episode of an earlier run with
    the same seed.
    """
    if cfg.policy not in POLICIES:
        raise ValueError(f"unknown policy {cfg.policy!r}; choose one of {POLICIES}")
    if cfg.episodes < 1 or cfg.workers < 1:
        raise ValueError(
            f"episodes and workers must be >= 1, got episodes={cfg.episodes}, workers={cfg.workers}"
        )
    if not 0.0 <= cfg.epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {cfg.epsilon}")
    world = cfg.world if isinstance(cfg.world, WorldConfig) else WorldConfig(**cfg.world)
    workers = min(cfg.workers, cfg.episodes)
    fns = [partial(make_world, world) for _ in range(workers)]
    vec_cls = AsyncVectorEnv if workers > 1 else SyncVectorEnv
    envs = vec_cls(fns, autoreset_mode=AutoresetMode.DISABLED)
    try:
        return _collect(cfg, world, envs)
    finally:
        envs.close()


def _collect(cfg: CollectConfig, world: WorldConfig, envs: gym.vector.VectorEnv) -> CollectSummary:
    n = envs.num_envs
    space = envs.single_action_space
    start = time.perf_counter()
    store = EpisodeStore.create(cfg.out, store_meta_for_world(world))
    seeds = iter(range(cfg.seed + len(store), cfg.seed + len(store) + 10**9))
    ep_seeds = [next(seeds) for _ in range(n)]
    obs, infos = envs.reset(seed=ep_seeds)
    recs: list[_Recorder | None] = [_Recorder(obs[i], _env_state(infos, i), ep_seeds[i]) for i in range(n)]
    started, done = n, 0
    ids, lengths, returns = [], [], []
    info = {"policy": cfg.policy, "epsilon": cfg.epsilon if cfg.policy == "epsilon-heuristic" else 0.0}
    bar = tqdm(total=cfg.episodes, desc=f"collect {world.name}", unit="ep", disable=not cfg.progress)
    while done < cfg.episodes:
        heuristic = envs.call("heuristic_action") if cfg.policy != "random" else [None] * n
        actions = []
        for i in range(n):
            rec = recs[i]
            rng = rec.rng if rec is not None else np.random.default_rng()
            explore = cfg.policy == "random" or (
                cfg.policy == "epsilon-heuristic" and rng.random() < cfg.epsilon
            )
            actions.append(sample_action(space, rng) if explore else heuristic[i])
        batch = np.stack([np.asarray(a, dtype=space.dtype) for a in actions])
        obs, rewards, terms, truncs, infos = envs.step(batch)
        if cfg.max_steps is not None:
            truncs = truncs | np.array([r is not None and len(r.actions) + 1 >= cfg.max_steps for r in recs])
        ended = np.zeros(n, dtype=bool)
        for i in range(n):
            if recs[i] is None:
                ended[i] = terms[i] or truncs[i]
                continue
            recs[i].add(actions[i], obs[i], rewards[i], terms[i], truncs[i], _env_state(infos, i))
            if terms[i] or truncs[i]:
                ended[i] = True
                ep = recs[i].episode(space, info)
                ids.append(store.append(ep))
                lengths.append(ep.num_steps)
                returns.append(float(ep.rewards.sum()))
                done += 1
                bar.update(1)
                recs[i] = None
        if ended.any() and done < cfg.episodes:
            reset_seeds: list[int | None] = [None] * n
            for i in np.flatnonzero(ended):
                if started < cfg.episodes:
                    reset_seeds[i] = next(seeds)
                    started += 1
            obs, infos = envs.reset(seed=reset_seeds, options={"reset_mask": ended})
            for i in np.flatnonzero(ended):
                if reset_seeds[i] is not None:  # else no episode is left to start and the env idles
                    recs[i] = _Recorder(obs[i], _env_state(infos, i), reset_seeds[i])
    bar.close()
    seconds = time.perf_counter() - start
    stored_frames = sum(lengths) + len(lengths)
    return CollectSummary(
        out=str(Path(cfg.out)),
        episodes=done,
        steps=int(sum(lengths)),
        mean_length=float(np.mean(lengths)),
        mean_return=float(np.mean(returns)),
        seconds=seconds,
        bytes_per_frame=store.bytes_on_disk() / max(store.num_frames, 1) if stored_frames else 0.0,
        episode_ids=ids,
    )
