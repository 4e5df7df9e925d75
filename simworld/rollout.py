"""Scripted rollouts: a start, a policy or an action script, a number of steps -> a ``Trajectory``.

With ``compare_real=True`` the ground-truth world is set to the start's true state and driven by
the same actions, so dream and reality can be watched side by side and compared frame by frame.
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from simworld.data.video import write_video
from simworld.metrics import psnr_uint8
from simworld.probes.readout import out_of_bounds, readout_bounds, readout_policy_folder
from simworld.world_model import WorldModel


@dataclass
class Trajectory:
    """An imagined trajectory (and, optionally, the real one beside it).

    ``frames (T+1, H, W, 3)`` start with the last context frame; step ``t`` takes ``actions[t]`` at
    ``frames[t]`` and yields ``rewards[t]``, ``terminated[t]`` and ``frames[t+1]``.
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    termination_prob: np.ndarray
    fps: float = 15.0
    real_frames: np.ndarray | None = None
    real_rewards: np.ndarray | None = None
    real_terminated: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def psnr(self) -> np.ndarray | None:
        """Per-step PSNR (dB) of dream vs real frames, when the real world ran beside."""
        if self.real_frames is None:
            return None
        return psnr_uint8(self.frames[1:], self.real_frames[1:])

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (arrays only; load with :meth:`load`, never needs pickle)."""
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        arrays["meta"] = np.frombuffer(
            json.dumps({"fps": self.fps, "info": self.info}).encode(), dtype=np.uint8
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        return cls(**arrays, fps=meta["fps"], info=meta["info"])

    def to_video(self, path: str | Path, upscale: int = 4, **kwargs: Any) -> Path:
        """mp4 of the dream, or ``real | dream | |difference|`` side by side when the real run exists."""
        frames = self.frames
        if self.real_frames is not None:
            diff = np.abs(frames.astype(np.int16) - self.real_frames.astype(np.int16)).astype(np.uint8)
            gap = np.full((*frames.shape[:2], 2, 3), 255, np.uint8)
            frames = np.concatenate([self.real_frames, gap, frames, gap, diff], axis=2)
        return write_video(path, frames, fps=self.fps, upscale=upscale, **kwargs)


Policy = Callable[[np.ndarray], Any]


def resolve_policy(
    spec: Any, action_space: gym.Space, world_id: str | None = None
) -> Policy | np.ndarray | str:
    """Turn what a user passes into a policy: an action list/array, a callable, ``"module:function"``,
    a YAML/JSON file of actions, ``"heuristic"`` (the real world's heuristic), ``"random"``, an
    SB3 model or ``.zip`` (a path as a string or a ``Path``), ``"shipped:<name>"`` (a policy in
    the package, `simworld agent eval policy=shipped:cartpole`), or ``"readout:<folder>"`` (the
    world's controller on the state a readout reads off the frames; ``world_id``, or else the world
    the readout recorded)."""
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, str):
        if spec in ("heuristic", "random"):
            return spec
        if (folder := readout_policy_folder(spec)) is not None:  # frames -> readout -> controller
            from simworld.probes.readout import ReadoutController, readout_world

            return ReadoutController(folder, world_id or readout_world(folder)["id"])
        if spec.startswith("shipped:"):
            from agents.train import policy_file

            spec = str(policy_file(spec))
        path = Path(spec)
        if path.suffix in (".json", ".yaml", ".yml") and path.exists():
            import yaml

            data = (
                json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            )
            return np.asarray(data["actions"] if isinstance(data, dict) else data)
        if path.suffix == ".zip" and (path.parent / "agent.json").exists():
            from agents.train import FramePolicy  # a `simworld agent train` policy: stacked frames

            return FramePolicy(path)
        if path.suffix == ".zip":
            from stable_baselines3.common.base_class import BaseAlgorithm

            for algo in ("PPO", "DQN", "A2C", "SAC"):
                try:
                    cls: type[BaseAlgorithm] = getattr(importlib.import_module("stable_baselines3"), algo)
                    return resolve_policy(cls.load(path, device="cpu"), action_space)
                except Exception:  # noqa: BLE001 - try the next algorithm
                    continue
            raise ValueError(f"{spec} is not a stable-baselines3 PPO/DQN/A2C/SAC policy")
        if ":" in spec:
            module, fn = spec.split(":", 1)
            return getattr(importlib.import_module(module), fn)
        raise ValueError(
            f"cannot read a policy from {spec!r}: expected 'heuristic', 'random', 'module:function', "
            "a .json/.yaml action list or an SB3 .zip"
        )
    if hasattr(spec, "predict") and not hasattr(spec, "reset"):  # an SB3 model (frame policies reset)
        return lambda obs: spec.predict(obs, deterministic=True)[0]
    if callable(spec):
        return spec
    return np.asarray(spec)


def make_real_world(model: WorldModel, world_kwargs: dict | None = None) -> gym.Env:
    import simworld  # noqa: F401  (registers the ids)

    params = {k: v for k, v in model.cfg.world_params.items() if k != "render_mode"}
    return gym.make(model.cfg.world_id, **{**params, **(world_kwargs or {})})


def _bank_start(
    model: WorldModel, rng: np.random.Generator, needs_state: str | None = None
) -> dict[str, Any]:
    """A random start-bank window; ``needs_state`` names a caller that runs the real world beside
    the dream, and so needs the window's true state."""
    from simworld.train.world_model import bank_state

    bank = getattr(model, "start_bank", None)
    if bank is None:
        raise ValueError("this checkpoint has no start-frame bank: pass start={'frames': ...}")
    i = int(rng.integers(len(bank["frames"])))
    state = bank_state(bank, i)
    if needs_state and not state:
        raise ValueError(f"{needs_state} needs a start bank with true states (to run the real world beside)")
    return {"frames": bank["frames"][i], "actions": bank["actions"][i], "state": state or None}


def _action(pol: Any, t: int, steps: int, frame: np.ndarray, real: gym.Env | None, space: gym.Space) -> Any:
    """Step ``t``'s action of a resolved policy: a script's, the real world's heuristic, a random one,
    or the callable's answer to ``frame``."""
    if isinstance(pol, np.ndarray):
        if t >= len(pol):
            raise ValueError(f"the action script has {len(pol)} actions but {steps} steps were asked for")
        return pol[t]
    if isinstance(pol, str):
        return real.unwrapped.heuristic_action() if pol == "heuristic" else space.sample()
    return pol(frame)


@torch.no_grad()
def rollout(
    checkpoint: str | Path | WorldModel,
    policy: Any,
    steps: int,
    start: dict[str, Any] | np.ndarray | None = None,
    seed: int = 0,
    device: str = "cpu",
    compare_real: bool = False,
    stop_on_termination: bool = False,
    restart_on_real_end: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Imagine ``steps`` steps from ``start`` (a start-bank window by default).

    Args:
        checkpoint: a world-model directory or a loaded ``WorldModel``.
        policy: see :func:`resolve_policy`. Callables receive the current dream frame.
        start: ``{"frames": (t0, H, W, 3), "actions": (t0-1, ...), "state": true state}`` or just frames.
        compare_real: run the ground-truth world from the start's true state with the same actions.
        stop_on_termination: end when the dream's termination head fires.
        restart_on_real_end: with ``compare_real``, when the real episode ends, start a fresh real
            episode; the dream shows its first frames and restarts from them once it has as many
            context frames as ``start`` had, so the video keeps going.
        progress: show a progress bar over the imagined steps.
    """
    model = (
        checkpoint if isinstance(checkpoint, WorldModel) else WorldModel.from_pretrained(checkpoint, device)
    )
    model.eval()
    rng = np.random.default_rng(seed)
    if start is None:
        start = _bank_start(model, rng)
    elif isinstance(start, np.ndarray):
        start = {"frames": start}
    frames0 = np.asarray(start["frames"], dtype=np.uint8)
    actions0 = start.get("actions")
    space = model.action_space
    space.seed(seed)
    pol = resolve_policy(policy, space, model.cfg.world_id)
    named = pol if isinstance(pol, str) else None
    real = None
    if compare_real or named == "heuristic":
        if start.get("state") is None:
            raise ValueError(
                "compare_real and the heuristic policy need the start's true state (start['state'])"
            )
        real = make_real_world(model)
        real.reset(seed=seed)
        real_obs = real.unwrapped.set_state(start["state"])
    gen = torch.Generator(device=model.device).manual_seed(seed)
    state = model.reset(
        frames0[None], None if actions0 is None else np.asarray(actions0)[None], generator=gen
    )
    frames, acts, rews, terms, probs = [frames0[-1]], [], [], [], []
    real_frames, real_rews, real_terms = [frames0[-1] if real is None else real_obs], [], []
    restarts, t0 = [], time.perf_counter()
    warmup: list[tuple[np.ndarray, Any]] | None = None  # real frames gathered to restart the dream
    for t in tqdm(range(steps), desc="dream", unit="step", disable=not progress, leave=False):
        a = _action(pol, t, steps, frames[-1], real, space)
        if warmup is None:
            frame, _, r, p = model.step(state, np.asarray(a)[None])
            frame, r, p = frame[0], float(r[0]), float(p[0])
        if real is not None:
            obs, rr, term, trunc, _ = real.step(a)
            real_frames.append(obs)
            real_rews.append(float(rr))
            real_terms.append(bool(term))
        if warmup is not None:  # the dream shows the real frames until it has a context again
            frame, r, p = obs, float(rr), 0.0
            warmup.append((obs, a))
            if len(warmup) == len(frames0):
                ctx = np.stack([f for f, _ in warmup])[None]
                ctx_actions = np.stack([np.asarray(x) for _, x in warmup[1:]])[None]
                state = model.reset(ctx, ctx_actions, generator=gen)
                warmup = None
        frames.append(frame)
        acts.append(np.asarray(a))
        rews.append(r)
        probs.append(p)
        terms.append(p > 0.5)
        if real is not None and (term or trunc) and restart_on_real_end and t + 1 < steps:
            obs, _ = real.reset(seed=seed + 1 + len(restarts))
            restarts.append(t + 1)
            if hasattr(pol, "reset"):  # a frame-stacking policy starts its stack afresh
                pol.reset()
            frames[-1] = real_frames[-1] = obs
            warmup = [(obs, None)]
            if len(frames0) == 1:
                state, warmup = model.reset(obs[None, None], generator=gen), None
        if stop_on_termination and terms[-1]:
            break
    seconds = time.perf_counter() - t0
    traj = Trajectory(
        frames=np.stack(frames),
        actions=np.stack(acts),
        rewards=np.array(rews, np.float32),
        terminated=np.array(terms),
        termination_prob=np.array(probs, np.float32),
        fps=model.cfg.fps,
        info={
            "seconds": seconds,
            "steps_per_s": len(acts) / seconds,
            "restarts": restarts,
            "world_id": model.cfg.world_id,
        },
    )
    if real is not None:
        traj.real_frames = np.stack(real_frames)
        traj.real_rewards = np.array(real_rews, np.float32)
        traj.real_terminated = np.array(real_terms)
    return traj


def _extreme_actions(space: gym.Space) -> tuple[np.ndarray, np.ndarray]:
    """The two actions furthest apart in ``space``: its first and last choice, or the box's corners."""
    if isinstance(space, gym.spaces.Discrete):
        return np.asarray(space.start), np.asarray(space.start + space.n - 1)
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0).astype(space.dtype)
        high = np.where(np.isfinite(space.high), space.high, 1.0).astype(space.dtype)
        return low, high
    raise ValueError(f"action_effect needs a Discrete or Box action space, got {space}")


def action_effect(
    checkpoint: str | Path | WorldModel,
    starts: int = 8,
    steps: int = 10,
    seed: int = 0,
    device: str = "cpu",
    readout: Any = None,
    teacher_forced: bool = False,
) -> dict[str, Any]:
    """How much the dream's frames answer the actions, against the real world from the same starts.

    From ``starts`` start-bank windows, hold each of the two most different actions for ``steps``
    steps, in the dream (same noise for both) and in the real world. The mean absolute pixel
    difference between the two branches at each step, dream and real, is averaged over the starts
    (steps after either real branch ends are left out of both). ``ratio`` = dream / real summed over
    the steps: near 1 the dream moves what the actions move; near 0 an agent trained in it cannot
    learn what its actions do (the dream's returns then depend on the start, not on the policy).

    Pixels weigh what is big: in CartPole the cart's slide fills the ratio while the pole, the
    thing an agent must balance, is a thin line. With a ``readout`` (a
    :class:`~simworld.probes.readout.StateReadout` trained on real frames) the same branches are
    also read into states, dream and real through the same readout, and ``state_ratio`` gives the
    dream / real branch separation per state dimension (CartPole: x, x velocity, pole angle, angular
    velocity).

    The same branches also say whether the dream *ends and pays* as the world does under each held
    action: ``ended`` is the share of branches whose episode ends within ``steps`` (dream: the
    expected share under its termination probabilities), ``held_return`` the mean return up to the
    end (dream: expected), each ``{"dream": [per action], "real": [per action]}``. A dream that keeps
    the pole up while the world's falls (CartPole) ends fewer branches, and an agent in it learns
    that pushing one way is safe.

    With a ``readout`` and ``teacher_forced``, every step of each branch is also predicted from the
    real frames before it (the world's, not the dream's own): ``state_teacher`` (per step, read
    off the real frame before and the predicted one) and ``state_ratio_teacher``. Where the dream's
    response falls short open loop but not teacher-forced, its own frames in the context are to
    blame; where both fall short, its one-step predictions already are.
    """
    model = (
        checkpoint if isinstance(checkpoint, WorldModel) else WorldModel.from_pretrained(checkpoint, device)
    )
    a, b = _extreme_actions(model.action_space)
    rng = np.random.default_rng(seed)
    dream_sum, real_sum, count = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    state_sums: list[np.ndarray] = []  # dream, real[, teacher-forced]: (steps, state dims)
    ended = np.zeros((2, 2))  # (dream, real) x action
    held = np.zeros((2, 2))
    for i in range(starts):
        start = _bank_start(model, rng, needs_state="action_effect")
        with warnings.catch_warnings():  # the real world runs on past its end; those steps are left out
            warnings.filterwarnings("ignore", message=".*already returned terminated")
            branches = [
                rollout(model, np.stack([x] * steps), steps, start=start, seed=seed + i, compare_real=True,
                        restart_on_real_end=False)
                for x in (a, b)
            ]  # fmt: skip
        alive = np.ones(steps, bool)
        for j, tr in enumerate(branches):
            end = np.flatnonzero(tr.real_terminated)
            if len(end):
                alive[end[0] + 1 :] = False  # the step that ends the episode still counts
            out = _outcome(tr)
            ended[:, j] += out[:, 0]
            held[:, j] += out[:, 1]
        d = np.abs(branches[0].frames[1:].astype(np.float32) - branches[1].frames[1:]).mean(axis=(1, 2, 3))
        r = np.abs(branches[0].real_frames[1:].astype(np.float32) - branches[1].real_frames[1:]).mean(
            axis=(1, 2, 3)
        )
        dream_sum += np.where(alive, d, 0.0)
        real_sum += np.where(alive, r, 0.0)
        count += alive
        if readout is not None:
            sep = [
                _read_separation(readout, start, *(getattr(tr, k) for tr in branches))
                for k in ("frames", "real_frames")
            ]
            if teacher_forced:
                reads = [
                    _read_teacher(readout, start, tr, _teacher_frames(model, start, tr, x, seed + i))
                    for tr, x in zip(branches, (a, b), strict=True)
                ]
                sep.append(np.abs(reads[0] - reads[1]))
            state_sums = state_sums or [np.zeros_like(x) for x in sep]
            for acc, x in zip(state_sums, sep, strict=True):
                acc += np.where(alive[:, None], x, 0.0)
    dream = dream_sum / np.maximum(count, 1)
    real = real_sum / np.maximum(count, 1)
    result: dict[str, Any] = {
        "actions": [a.tolist(), b.tolist()],
        # per step; None where every start's real episode had ended
        "dream": [float(x) if n else None for x, n in zip(dream, count, strict=True)],
        "real": [float(x) if n else None for x, n in zip(real, count, strict=True)],
        "ratio": float(dream_sum.sum() / max(real_sum.sum(), 1e-8)),
        "ended": {"dream": (ended[0] / starts).tolist(), "real": (ended[1] / starts).tolist()},
        "held_return": {"dream": (held[0] / starts).tolist(), "real": (held[1] / starts).tolist()},
    }
    if readout is not None:
        means = [(x / np.maximum(count, 1)[:, None]) for x in state_sums]
        for name, m in zip(("state_dream", "state_real", "state_teacher"), means, strict=False):
            result[name] = [m[t].tolist() if count[t] else None for t in range(steps)]
        result["state_ratio"] = (state_sums[0].sum(0) / np.maximum(state_sums[1].sum(0), 1e-8)).tolist()
        if teacher_forced:
            real_sum = np.maximum(state_sums[1].sum(0), 1e-8)
            result["state_ratio_teacher"] = (state_sums[2].sum(0) / real_sum).tolist()
    return result


def _read_teacher(readout: Any, start: dict[str, Any], tr: Trajectory, predicted: np.ndarray) -> np.ndarray:
    """``(steps, d)``: the states ``readout`` reads off each predicted frame after the real ones before it."""
    real = np.concatenate([np.asarray(start["frames"], np.uint8)[:-1], tr.real_frames])
    first, lead = len(start["frames"]), readout.context - 1
    if first < lead:  # a short start window: repeat its first frame
        real = np.concatenate([np.repeat(real[:1], lead - first, axis=0), real])
        first = lead
    windows = [
        np.concatenate([real[first + k - lead : first + k], predicted[k : k + 1]])
        for k in range(len(predicted))
    ]
    with torch.no_grad():
        return readout.eval()(torch.from_numpy(np.stack(windows))).numpy()


def _teacher_frames(
    model: WorldModel, start: dict[str, Any], tr: Trajectory, action: np.ndarray, seed: int
) -> np.ndarray:
    """``(steps, H, W, 3)``: each step of a ``compare_real`` branch that held ``action``, predicted
    from the real frames before it (the start window's, then the world's) and their actions."""
    frames = np.concatenate([np.asarray(start["frames"])[:-1], tr.real_frames])
    acts = np.concatenate([np.asarray(start["actions"]), np.stack([action] * (len(tr.real_frames) - 1))])
    first = len(start["frames"])  # index in `frames` of the first predicted frame
    out = []
    for j in range(first, len(frames)):
        lo = max(0, j - model.context)
        state = model.reset(
            frames[None, lo:j], acts[None, lo : j - 1], torch.Generator().manual_seed(seed + j)
        )
        out.append(model.step(state, np.asarray(action)[None])[0][0])
    return np.stack(out)


def _outcome(tr: Trajectory) -> np.ndarray:
    """``[[dream ended, dream return], [real ended, real return]]`` of one ``compare_real`` rollout.

    The dream's are expectations under its termination probabilities (a step's reward counts with
    the probability that no earlier step ended the episode); the real world's run to its first
    termination, that step included."""
    live = np.cumprod(1.0 - tr.termination_prob)  # the dream's P(not ended) after each step
    dream = [1.0 - live[-1], float(np.sum(tr.rewards * np.concatenate([[1.0], live[:-1]])))]
    end = np.flatnonzero(tr.real_terminated)
    stop = end[0] + 1 if len(end) else len(tr.real_rewards)
    return np.array([dream, [float(len(end) > 0), float(tr.real_rewards[:stop].sum())]])


def policy_outcome(
    checkpoint: str | Path | WorldModel,
    policy: Any,
    starts: int = 16,
    steps: int = 15,
    seed: int = 0,
    device: str = "cpu",
    reward_mode: str = "expected",
    reward_contact_gap: float | None = None,
    termination_floor_gap: float | None = None,
    termination_readout: Any = None,
    termination_bounds: dict[int, float] | None = None,
) -> dict[str, Any]:
    """A policy's return in the dream against the real world's, from the same starts, same actions.

    From ``starts`` start-bank windows the policy plays ``steps`` steps in the dream (seeing the
    dream's frames, as it does while it trains there), and the real world, set to each start's true
    state, replays its actions. ``return`` and ``ended`` are the means over the starts, dream
    (expected under its termination probabilities) and real (up to the first termination); the
    dream's minus the real's, ``overrating``, is how much the dream overrates the policy. A policy
    that has found a model error (a dream that pays where the world does not, a pole that does
    not fall) shows a large one; a dream that is right about the policy shows about 0.

    The replay is open loop: in an unstable world a small difference grows under actions chosen for
    the dream's frames, and the world ends episodes the policy would have saved (CartPole: 0.62 of
    the replays end in 15 steps where the policy, acting on the real frames, ends 0.25;
    docs/results.md, session 22). ``real_closed`` is the policy itself in the real world from the same
    true states, acting on the real frames: the dream's closed-loop ``dream`` numbers compare with it
    (the dream's errors the policy meets, not the replay's divergence). Frame-stacking
    policies (``agents.train.FramePolicy``) start their stack from the start window, as in the
    dream environment; ``policy`` is anything :func:`resolve_policy` reads. ``reward_mode`` is how the
    dream pays (:attr:`WorldModel.reward_mode`; the one the policy trained with), and
    ``reward_contact_gap`` pays only the dream steps whose frames show a contact with the agent, as
    ``envs.probe_wrapper.ContactRewardVectorWrapper`` does; ``termination_floor_gap`` ends dream
    episodes only at frames that show an object at the floor, as ``envs.dream.DreamVectorEnv`` does,
    and ``termination_readout`` with ``termination_bounds`` ends them where the readout of the frames
    leaves the bounds, as there.
    """
    model = (
        checkpoint if isinstance(checkpoint, WorldModel) else WorldModel.from_pretrained(checkpoint, device)
    )
    before, model.reward_mode = model.reward_mode, reward_mode
    try:
        return _policy_outcome(
            model,
            policy,
            starts,
            steps,
            seed,
            reward_contact_gap,
            termination_floor_gap,
            readout_bounds(termination_readout, termination_bounds),
        )
    finally:
        model.reward_mode = before


def _policy_outcome(
    model: WorldModel,
    policy: Any,
    starts: int,
    steps: int,
    seed: int,
    contact_gap: float | None,
    floor_gap: float | None = None,
    bounds: tuple[Any, dict[int, float] | None] = (None, None),
) -> dict[str, Any]:
    from simworld.probes.contacts import agent_contact, floor_steps
    from simworld.probes.world import WorldSpec

    spec = None
    if contact_gap is not None or floor_gap is not None:
        spec = WorldSpec.from_world(model.cfg.world_id, model.cfg.world_params)
    pol = resolve_policy(policy, model.action_space, model.cfg.world_id)
    rng = np.random.default_rng(seed)
    outs = np.zeros((starts, 2, 2))
    closed = np.zeros((starts, 2))
    real = make_real_world(model)  # one world for every start's closed loop
    for i in range(starts):
        start = _bank_start(model, rng, needs_state="policy_outcome")
        if hasattr(pol, "reset"):
            pol.reset(np.asarray(start["frames"])[:-1])  # the rollout's first call adds the last one
        with warnings.catch_warnings():  # the real world runs on past its end; those steps are left out
            warnings.filterwarnings("ignore", message=".*already returned terminated")
            tr = rollout(
                model, pol, steps, start=start, seed=seed + i, compare_real=True, restart_on_real_end=False
            )
        if contact_gap is not None:  # only the steps whose frames show a contact pay
            tr.rewards = tr.rewards * agent_contact(tr.frames[:-1], tr.frames[1:], spec, contact_gap)
        if floor_gap is not None:  # only the steps whose frames show an object at the floor end
            tr.termination_prob = tr.termination_prob * floor_steps(tr.frames, spec, floor_gap)
        if bounds[0] is not None:  # a step whose frames read past the bounds ends
            out = out_of_bounds(bounds[0], bounds[1], tr.frames[:-1], tr.frames[1:])
            tr.termination_prob = np.where(out, 1.0, tr.termination_prob)
        outs[i] = _outcome(tr)
        closed[i] = _closed_loop_real(real, pol, start, steps, seed + i)
    real.close()
    mean, cmean = outs.mean(axis=0), closed.mean(axis=0)
    return {
        "starts": starts,
        "steps": steps,
        "return": {"dream": float(mean[0, 1]), "real": float(mean[1, 1]), "real_closed": float(cmean[1])},
        "ended": {"dream": float(mean[0, 0]), "real": float(mean[1, 0]), "real_closed": float(cmean[0])},
        "overrating": float(mean[0, 1] - mean[1, 1]),
        "per_start_return": {"dream": outs[:, 0, 1].tolist(), "real": outs[:, 1, 1].tolist()},
    }


def _closed_loop_real(real: gym.Env, pol: Any, start: dict[str, Any], steps: int, seed: int) -> list[float]:
    """``[ended, return]`` of the policy in the real world from ``start``'s true state, acting on the
    real frames (closed loop; the replay of the dream's actions is open loop)."""
    real.reset(seed=seed)
    obs = real.unwrapped.set_state(start["state"])
    real.action_space.seed(seed)
    if hasattr(pol, "reset"):
        pol.reset(np.asarray(start["frames"])[:-1])
    total, ended = 0.0, False
    for t in range(steps):
        obs, r, ended, truncated, _ = real.step(_action(pol, t, steps, obs, real, real.action_space))
        total += float(r)
        if ended or truncated:
            break
    return [float(ended), total]


def _read_separation(readout: Any, start: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-step ``|state(x) - state(y)|`` ``(steps, d)`` of two branches' frames ``(steps + 1, H, W, 3)``
    as ``readout`` reads them; the start window's earlier frames give the first steps their context."""
    from simworld.probes.readout import predict

    lead = np.asarray(start["frames"], np.uint8)[:-1]
    if len(lead) + 1 < readout.context:  # a short start window: repeat its first frame
        pad = np.repeat(x[:1], readout.context - 1 - len(lead), axis=0)
        lead = np.concatenate([pad, lead]) if len(lead) else pad
    lead = lead[len(lead) - (readout.context - 1) :] if readout.context > 1 else lead[:0]
    sx, sy = (predict(readout, np.concatenate([lead, v])) for v in (x, y))  # one state per frame of v
    return np.abs(sx[1:] - sy[1:])
