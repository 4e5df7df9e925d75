"""Matched possible and impossible videos: a real Balls clip, and the same clip with one law broken.

Each generator takes a real clip (frames, true states, actions), breaks one law from an onset frame on
by editing the true trajectory (or re-simulating it from an edited state with the same actions), and
re-renders it with the world's own renderer (``set_state`` returns the frame of a state). The probes
that are validated on these videos see only the frames, never what was done to them.

| violation       | what happens from the onset frame                                    | magnitude        |
|-----------------|----------------------------------------------------------------------|------------------|
| `teleport`      | one ball jumps by ``m`` units, then moves on physically              | distance, units  |
| `vanish`        | one ball is not drawn for ``m`` frames                                | frames           |
| `duplicate`     | a second copy of one ball, moving with it, for ``m`` frames            | frames           |
| `radius`        | one ball's radius is multiplied (or divided, at random) by ``m``     | factor           |
| `colour_swap`   | one ball takes a free colour, or swaps colours with another ball     | -                |
| `gravity`       | the whole clip is re-simulated with gravity times ``m``               | factor           |
| `restitution`   | the whole clip is re-simulated with coefficient of restitution ``m`` | coefficient      |
| `wall_pass`     | at its first wall bounce a ball flies on through the wall            | -                |
| `velocity_jump` | a ball in free flight gets a kick of ``m`` units/s, then moves on    | speed, units/s   |
| `jitter`        | (possible) the clip re-simulated from a start moved by ~``m`` units  | distance, units  |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

State = dict[str, np.ndarray]


@dataclass
class Clip:
    """A real clip of a Balls world.

    Attributes:
        frames: ``uint8 (T, H, W, 3)``.
        states: ``T`` true states (``BallsEnv.get_state()`` dicts), one per frame.
        actions: ``(T-1,)`` the action taken between consecutive frames.
        world_params: the world's constructor arguments.
        seed: the reset seed.
    """

    frames: np.ndarray
    states: list[State]
    actions: np.ndarray
    world_params: dict[str, Any]
    seed: int = 0

    @property
    def balls(self) -> np.ndarray:
        """Indices of the balls present in the clip."""
        return np.flatnonzero(self.states[0]["ball_mask"])


@dataclass
class Perturbed:
    """An edited clip: what was rendered, and what was done (for tests and reports, never for probes).

    Attributes:
        frames: ``uint8 (T, H, W, 3)``.
        states: the states that were rendered, one per frame (a duplicate's copy is in ``info``).
        kind: violation name; ``magnitude``: its size; ``onset``: first changed frame; ``ball``: the
            ball it happened to.
    """

    frames: np.ndarray
    states: list[State]
    kind: str
    magnitude: float
    onset: int
    ball: int
    info: dict[str, Any] = field(default_factory=dict)


def make_balls(**params: Any) -> gym.Env:
    """An unwrapped Balls world (stepping on past a floor hit is fine for generating clips)."""
    from simworld.registration import register_envs

    register_envs()
    params = {k: v for k, v in params.items() if k != "render_mode"}
    return gym.make("simworld/Balls-v0", **params).unwrapped


def record_clip(seed: int, frames: int = 48, world_params: dict[str, Any] | None = None) -> Clip:
    """Run the Balls world from ``reset(seed)`` with its heuristic paddle for ``frames`` frames."""
    env = make_balls(**(world_params or {}))
    obs, info = env.reset(seed=seed)
    out, states, actions = [obs], [info["state"]], []
    for _ in range(frames - 1):
        a = env.heuristic_action()
        obs, _, _, _, info = env.step(a)
        out.append(obs)
        states.append(info["state"])
        actions.append(a)
    return Clip(np.stack(out), states, np.array(actions), dict(env.world_params), seed)


def _copy(state: State) -> State:
    return {k: np.array(v, copy=True) for k, v in state.items()}


def _simulate(env: gym.Env, start: State, actions: np.ndarray) -> tuple[list[np.ndarray], list[State]]:
    """Frames and states from ``start`` (included) on, taking ``actions`` in turn."""
    frames, states = [env.set_state(start)], [env.get_state()]
    for a in actions:
        obs, *_ = env.step(int(a))
        frames.append(obs)
        states.append(env.get_state())
    return frames, states


def _onset(clip: Clip, rng: np.random.Generator) -> int:
    t = len(clip.frames)
    return int(rng.integers(t // 3, 2 * t // 3 + 1))


def _free_spot(
    state: State, k: int, rng: np.random.Generator, distance: float, world: tuple[float, float]
) -> np.ndarray | None:
    """A position ``distance`` from ball ``k`` that keeps it inside, above the paddle and off other balls."""
    r = state["ball_radius"][k]
    top = state["paddle_pos"][1] + state["paddle_size"][1] / 2
    others = [j for j in np.flatnonzero(state["ball_mask"]) if j != k]
    for _ in range(200):
        ang = rng.uniform(0, 2 * math.pi)
        p = state["ball_pos"][k] + distance * np.array([math.cos(ang), math.sin(ang)])
        inside = r <= p[0] <= world[0] - r and top + r <= p[1] <= world[1] - r
        apart = all(
            np.linalg.norm(p - state["ball_pos"][j]) > r + state["ball_radius"][j] + 0.1 for j in others
        )
        if inside and apart:
            return p
    return None


def teleport(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 1.0) -> Perturbed | None:
    """A ball jumps ``magnitude`` units at the onset frame, then the world runs on from there."""
    t0, k = _onset(clip, rng), int(rng.choice(clip.balls))
    state = _copy(clip.states[t0])
    p = _free_spot(state, k, rng, magnitude, tuple(state["world_size"]))
    if p is None:
        return None
    state["ball_pos"][k] = p
    frames, states = _simulate(env, state, clip.actions[t0:])
    return _splice(clip, frames, states, "teleport", magnitude, t0, k)


def velocity_jump(
    clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 2.0
) -> Perturbed | None:
    """A ball in free flight gets a velocity kick of ``magnitude`` units/s in a random direction."""
    g = float(clip.states[0]["gravity"])
    vel = np.stack([s["ball_vel"] for s in clip.states])  # (t, b, 2)
    dv = np.diff(vel, axis=0) + np.array([0.0, g / clip.world_params["fps"]])  # ~0 in free flight
    smooth = np.linalg.norm(dv, axis=-1) < 1e-3  # (t-1, b)
    candidates = [
        (t, k)
        for k in clip.balls
        for t in range(len(clip.frames) // 3, 2 * len(clip.frames) // 3 + 1)
        if smooth[max(t - 4, 0) : t + 4, k].all()
    ]
    if not candidates:
        return None
    t0, k = candidates[int(rng.integers(len(candidates)))]
    state = _copy(clip.states[t0])
    ang = rng.uniform(0, 2 * math.pi)
    state["ball_vel"][k] += magnitude * np.array([math.cos(ang), math.sin(ang)])
    # the kick acts between frames t0 and t0+1: frame t0 itself is unchanged
    frames, states = _simulate(env, state, clip.actions[t0:])
    return _splice(clip, frames, states, "velocity_jump", magnitude, t0 + 1, k, first=t0)


def gravity(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 2.0) -> Perturbed:
    """The whole clip re-simulated from its first state with gravity multiplied by ``magnitude``."""
    state = _copy(clip.states[0])
    state["gravity"] = state["gravity"] * magnitude
    frames, states = _simulate(env, state, clip.actions)
    return Perturbed(np.stack(frames), states, "gravity", magnitude, 1, -1)


def restitution(
    clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 0.8
) -> Perturbed | None:
    """The whole clip re-simulated with every contact's coefficient of restitution set to ``magnitude``."""
    lossy = make_balls(**{**clip.world_params, "restitution": magnitude})
    frames, states = _simulate(lossy, _copy(clip.states[0]), clip.actions)
    return _splice(clip, frames, states, "restitution", magnitude, 0, -1)


def jitter(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 1e-3) -> Perturbed:
    """A *possible* twin: the clip re-simulated from a start whose ball positions moved ~``magnitude`` units."""
    state = _copy(clip.states[0])
    state["ball_pos"] += rng.normal(0.0, magnitude, state["ball_pos"].shape) * state["ball_mask"][:, None]
    frames, states = _simulate(env, state, clip.actions)
    return Perturbed(np.stack(frames), states, "jitter", magnitude, 0, -1)


def _render_edits(
    clip: Clip, env: gym.Env, edit: Callable[[State, int], State], frames: range
) -> tuple[np.ndarray, list[State]]:
    out, states = clip.frames.copy(), [_copy(s) for s in clip.states]
    for t in frames:
        states[t] = edit(_copy(clip.states[t]), t)
        out[t] = env.set_state(states[t])
    return out, states


def vanish(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 4) -> Perturbed:
    """A ball is not drawn for ``magnitude`` frames (to the end of the clip at most)."""
    t0, k = _onset(clip, rng), int(rng.choice(clip.balls))

    def edit(s: State, t: int) -> State:
        s["ball_mask"][k] = 0.0
        return s

    span = range(t0, min(t0 + int(magnitude), len(clip.frames)))
    frames, states = _render_edits(clip, env, edit, span)
    return Perturbed(frames, states, "vanish", magnitude, t0, k)


def duplicate(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 4) -> Perturbed | None:
    """A copy of a ball, offset by ~3 radii, moves with it for ``magnitude`` frames."""
    t0, k = _onset(clip, rng), int(rng.choice(clip.balls))
    s0 = clip.states[t0]
    p = _free_spot(s0, k, rng, 3.0 * s0["ball_radius"][k] + 0.3, tuple(s0["world_size"]))
    if p is None:
        return None
    offset = p - s0["ball_pos"][k]
    out, copies = clip.frames.copy(), []
    for t in range(t0, min(t0 + int(magnitude), len(clip.frames))):
        empty = _copy(clip.states[t])
        empty["ball_mask"][:] = 0.0
        ghost = _copy(empty)
        ghost["ball_mask"][k] = 1.0
        ghost["ball_pos"][k] = clip.states[t]["ball_pos"][k] + offset
        background, copy = env.set_state(empty), env.set_state(ghost)
        drawn = (copy != background).any(-1)
        out[t][drawn] = copy[drawn]  # balls are drawn last: the copy covers whatever is there
        copies.append(ghost["ball_pos"][k].copy())
    return Perturbed(out, clip.states, "duplicate", magnitude, t0, k, {"copy_pos": np.array(copies)})


def radius(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 1.2) -> Perturbed:
    """From the onset on, a ball's radius is multiplied or divided (at random) by ``magnitude``."""
    t0, k = _onset(clip, rng), int(rng.choice(clip.balls))
    factor = magnitude if rng.random() < 0.5 else 1.0 / magnitude

    def edit(s: State, t: int) -> State:
        s["ball_radius"][k] *= factor
        s["ball_mass"][k] *= factor**2
        return s

    frames, states = _render_edits(clip, env, edit, range(t0, len(clip.frames)))
    return Perturbed(frames, states, "radius", factor, t0, k)


def colour_swap(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 1.0) -> Perturbed:
    """From the onset on, a ball is drawn in a colour no ball has, or swaps colours with another ball."""
    t0, k = _onset(clip, rng), int(rng.choice(clip.balls))
    mask = clip.states[0]["ball_mask"]
    free = np.flatnonzero(mask == 0)
    j = int(free[0]) if len(free) else int(rng.choice([b for b in clip.balls if b != k]))
    perm = np.arange(len(mask))
    perm[[k, j]] = perm[[j, k]]

    def edit(s: State, t: int) -> State:
        for key in ("ball_pos", "ball_vel", "ball_radius", "ball_mass", "ball_mask"):
            s[key] = s[key][perm]
        return s

    frames, states = _render_edits(clip, env, edit, range(t0, len(clip.frames)))
    return Perturbed(frames, states, "colour_swap", 1.0, t0, k, {"new_slot": j})


def wall_pass(clip: Clip, env: gym.Env, rng: np.random.Generator, magnitude: float = 1.0) -> Perturbed | None:
    """At a ball's first bounce off a wall (after the first quarter), it flies on through the wall.

    From the frame before the bounce, the ball follows the free-flight parabola
    ``p + v tau - g tau^2 / 2`` (no walls, no other balls); everything else is the real clip.
    """
    w, h = clip.states[0]["world_size"]
    g = float(clip.states[0]["gravity"])
    dt = 1.0 / clip.world_params["fps"]
    bounces = []
    for k in clip.balls:
        r = clip.states[0]["ball_radius"][k]
        for t in range(max(len(clip.frames) // 4, 1), len(clip.frames)):
            (x, y), (vx0, vy0) = clip.states[t - 1]["ball_pos"][k], clip.states[t - 1]["ball_vel"][k]
            vx1, vy1 = clip.states[t]["ball_vel"][k]
            near = 3 * math.hypot(vx0, vy0) * dt + 0.1
            side = vx0 * vx1 < 0 and (x - r < near or w - x - r < near)
            roof = vy0 > 0 > vy1 and h - y - r < near
            if side or roof:
                bounces.append((t, int(k)))
                break
    if not bounces:
        return None
    t0, k = min(bounces)

    def edit(s: State, t: int) -> State:
        tau = (t - (t0 - 1)) * dt
        p, v = clip.states[t0 - 1]["ball_pos"][k], clip.states[t0 - 1]["ball_vel"][k]
        s["ball_pos"][k] = p + v * tau + np.array([0.0, -0.5 * g * tau**2])
        return s

    frames, states = _render_edits(clip, env, edit, range(t0, len(clip.frames)))
    return Perturbed(frames, states, "wall_pass", 1.0, t0, k)


def _splice(
    clip: Clip,
    frames: list[np.ndarray],
    states: list[State],
    kind: str,
    magnitude: float,
    onset: int,
    ball: int,
    first: int | None = None,
) -> Perturbed | None:
    """The real clip up to ``first`` (default ``onset``), then the new frames; None if nothing changed."""
    first = onset if first is None else first
    out = np.concatenate([clip.frames[:first], np.stack(frames)])
    changed = np.flatnonzero((out != clip.frames).any(axis=(1, 2, 3)))
    if not len(changed):
        return None  # e.g. a lossy restitution in a clip with no bounce: nothing to detect
    return Perturbed(out, clip.states[:first] + states, kind, magnitude, int(changed[0]), ball)


@dataclass(frozen=True)
class Violation:
    """A violation family: its generator, documented magnitude, sweep and unit."""

    make: Callable[..., Perturbed | None]
    magnitude: float
    sweep: tuple[float, ...]
    unit: str


VIOLATIONS: dict[str, Violation] = {
    "teleport": Violation(teleport, 1.0, (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0), "units"),
    "vanish": Violation(vanish, 4, (1, 2, 4, 8), "frames"),
    "duplicate": Violation(duplicate, 4, (1, 2, 4, 8), "frames"),
    "radius": Violation(radius, 1.2, (1.01, 1.02, 1.03, 1.05, 1.1, 1.2, 1.5), "factor"),
    "colour_swap": Violation(colour_swap, 1.0, (), "-"),
    "gravity_x0.5": Violation(gravity, 0.5, (), "factor"),
    "gravity_x2": Violation(gravity, 2.0, (), "factor"),
    "gravity": Violation(gravity, 2.0, (0.5, 0.8, 0.9, 0.95, 0.98, 1.02, 1.05, 1.1, 1.25, 2.0), "factor"),
    "restitution": Violation(restitution, 0.8, (0.5, 0.8, 0.9, 0.95, 0.98, 0.99), "coefficient"),
    "wall_pass": Violation(wall_pass, 1.0, (), "-"),
    "velocity_jump": Violation(velocity_jump, 2.0, (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0), "units/s"),
}
MATRIX_VIOLATIONS = tuple(n for n in VIOLATIONS if n != "gravity")  # `gravity` is only swept
