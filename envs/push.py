"""Push: a top-down disk robot pushes a square block onto a goal, simulated with pymunk."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pymunk
from gymnasium import spaces

from envs.render import (
    BACKGROUND,
    BLUE,
    MUTED_GREEN,
    ORANGE,
    draw_disk,
    draw_polygon,
    new_canvas,
    rect_vertices,
    to_uint8,
    world_to_px,
)
from envs.validation import frame_size as _frame_size
from envs.validation import integer as _integer
from envs.validation import number as _number
from envs.validation import validate_state as _validate_state

_G = 9.81  # only sets the floor's normal force for Coulomb friction; the floor is horizontal
_WALL_THICKNESS = 1.0
_SQUARE_FRICTION_ARM = 0.3826  # mean distance from the centre of a unit square: friction torque arm

_STATE_SHAPES = {
    "agent_pos": (2,),
    "agent_vel": (2,),
    "agent_radius": (),
    "agent_mass": (),
    "block_pos": (2,),
    "block_vel": (2,),
    "block_angle": (),
    "block_angular_vel": (),
    "block_size": (),
    "block_mass": (),
    "goal_pos": (2,),
    "goal_size": (),
    "world_size": (2,),
    "scale": (),
}


class PushEnv(gym.Env):
    """Top-down pushing: a disk robot shoves a square block across a floor with friction onto a goal.

    ## Description

    Seen from above (no gravity in the image plane). The blue agent disk is driven by a 2-D force; the
    orange square block slides on the floor with Coulomb friction (force ``friction * block_mass * g``,
    and the matching torque) and turns when pushed off-centre; the muted-green goal square is drawn under
    everything. Solid walls lie along the image edges (not drawn). The agent feels the same Coulomb
    friction plus viscous damping ``agent_damping * velocity``, so it stops when the force stops and has a
    top speed of about ``(max_force - friction * agent_mass * g) / agent_damping``. The agent does not
    rotate. Flat colours: ``AGENT_COLOR``, ``BLOCK_COLOR``, ``GOAL_COLOR`` on ``BACKGROUND_COLOR``.

    World coordinates have the origin at the bottom-left corner and y up; the image has row 0 at the top.
    ``scale = frame_width / world_size`` pixels per unit; the arena height follows the frame's aspect
    ratio. Each action lasts ``1 / fps`` seconds, simulated as ``substeps`` pymunk steps.

    ## Action space

    ``Box(-1, 1, (2,), float32)``: the force on the agent, ``(fx, fy)`` in units of ``max_force``
    (world axes: +x right, +y up).

    ## Observation space

    The rendered frame, ``Box(0, 255, (H, W, 3), uint8)`` with ``(H, W) = frame_size``; ``render()``
    returns the same image.

    ## Rewards

    ``previous block-to-goal distance - current distance`` (world units, centre to centre), plus
    ``success_bonus`` on the step that succeeds.

    ## Episode end

    - Termination (success): the block centre is within ``goal_tolerance`` of the goal centre.
    - Truncation: only from ``max_episode_steps`` (300 for ``simworld/Push-v0``).

    ## Info

    ``info["state"]`` (also ``get_state()``) holds float64 arrays in world units:

    | key                 | shape | meaning                                      |
    |---------------------|-------|----------------------------------------------|
    | `agent_pos`         | (2,)  | agent centre                                 |
    | `agent_vel`         | (2,)  | agent velocity, units/s                      |
    | `agent_radius`      | ()    | agent radius                                 |
    | `agent_mass`        | ()    | agent mass                                   |
    | `block_pos`         | (2,)  | block centre                                 |
    | `block_vel`         | (2,)  | block velocity, units/s                      |
    | `block_angle`       | ()    | block angle, radians counter-clockwise       |
    | `block_angular_vel` | ()    | block angular velocity, rad/s                |
    | `block_size`        | ()    | block side length                            |
    | `block_mass`        | ()    | block mass                                   |
    | `goal_pos`          | (2,)  | goal centre                                  |
    | `goal_size`         | ()    | goal side length (axis-aligned square)       |
    | `world_size`        | (2,)  | (width, height) of the arena                 |
    | `scale`             | ()    | pixels per world unit                        |

    ## Arguments

    - ``render_mode``: only ``"rgb_array"`` (or ``None``; frames are still the observations).
    - ``frame_size``: ``(height, width)`` of the frame in pixels.
    - ``world_size``: arena width in units; the height follows the frame's aspect ratio.
    - ``agent_radius``, ``agent_mass``: the agent disk.
    - ``agent_damping``: viscous damping of the agent (force per unit speed).
    - ``block_size``, ``block_mass``: side length and mass of the block.
    - ``friction``: Coulomb friction coefficient of the floor (block and agent) and of the contacts.
    - ``max_force``: force for an action of norm 1 along an axis. The agent can only push the block if
      ``max_force > friction * g * (agent_mass + block_mass)`` (g = 9.81); the defaults leave a third spare.
    - ``goal_size``: side of the drawn goal square; ``goal_tolerance``: success radius.
    - ``success_bonus``: reward added on success.
    - ``substeps``: pymunk steps per action; ``fps``: actions per simulated second.

    Episodes start with the goal, the block (at a random angle) and the agent at random non-overlapping
    positions, the block at least ``goal_size`` from the goal and far enough from the walls that the agent
    fits behind it.

    ## Version history

    - v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    AGENT_COLOR = BLUE
    BLOCK_COLOR = ORANGE
    GOAL_COLOR = MUTED_GREEN
    BACKGROUND_COLOR = BACKGROUND

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        frame_size: Sequence[int] = (64, 64),
        world_size: float = 4.0,
        agent_radius: float = 0.2,
        agent_mass: float = 1.0,
        agent_damping: float = 5.0,
        block_size: float = 0.5,
        block_mass: float = 1.0,
        friction: float = 0.5,
        max_force: float = 15.0,
        goal_size: float = 0.7,
        goal_tolerance: float = 0.15,
        success_bonus: float = 10.0,
        substeps: int = 10,
        fps: int = 15,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.frame_size = _frame_size(frame_size)
        self.world_size = _number("world_size", world_size, low=0.0, strict=True)
        self.agent_radius = _number("agent_radius", agent_radius, low=0.0, strict=True)
        self.agent_mass = _number("agent_mass", agent_mass, low=0.0, strict=True)
        self.agent_damping = _number("agent_damping", agent_damping, low=0.0)
        self.block_size = _number("block_size", block_size, low=0.0, strict=True)
        self.block_mass = _number("block_mass", block_mass, low=0.0, strict=True)
        self.friction = _number("friction", friction, low=0.0)
        self.max_force = _number("max_force", max_force, low=0.0, strict=True)
        self.goal_size = _number("goal_size", goal_size, low=0.0, strict=True)
        self.goal_tolerance = _number("goal_tolerance", goal_tolerance, low=0.0, strict=True)
        self.success_bonus = _number("success_bonus", success_bonus)
        self.substeps = _integer("substeps", substeps, 1)
        self.fps = _integer("fps", fps, 1)

        height_px, width_px = self.frame_size
        self.scale = width_px / self.world_size
        self.world_height = self.world_size * height_px / width_px
        # The block spawns far enough from the walls that the agent fits between it and any wall.
        self._block_margin = self.block_size / math.sqrt(2) + 2 * self.agent_radius + 0.05
        spans = (self.world_size - 2 * self._block_margin, self.world_height - 2 * self._block_margin)
        if min(spans) <= 0 or max(spans) < 2 * self.goal_size:
            raise ValueError(
                f"world_size {self.world_size:g} (height {self.world_height:g}) is too small for block_size "
                f"{self.block_size}, agent_radius {self.agent_radius} and goal_size {self.goal_size}"
            )

        self.metadata = {**self.metadata, "render_fps": self.fps}
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, (height_px, width_px, 3), dtype=np.uint8)

        self._space: pymunk.Space | None = None
        self._agent: pymunk.Body | None = None
        self._block: pymunk.Body | None = None
        self._sizes = {"agent_radius": self.agent_radius, "block_size": self.block_size}
        self._goal_pos = np.zeros(2)
        self._goal_size = self.goal_size
        self._frame: np.ndarray | None = None
        self._distance = 0.0

    @property
    def world_params(self) -> dict[str, Any]:
        """All constructor arguments, JSON-serialisable: ``PushEnv(**env.world_params)`` rebuilds the env."""
        return {
            "render_mode": self.render_mode,
            "frame_size": list(self.frame_size),
            "world_size": self.world_size,
            "agent_radius": self.agent_radius,
            "agent_mass": self.agent_mass,
            "agent_damping": self.agent_damping,
            "block_size": self.block_size,
            "block_mass": self.block_mass,
            "friction": self.friction,
            "max_force": self.max_force,
            "goal_size": self.goal_size,
            "goal_tolerance": self.goal_tolerance,
            "success_bonus": self.success_bonus,
            "substeps": self.substeps,
            "fps": self.fps,
        }

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        m = self._block_margin
        lo, hi = np.array([m, m]), np.array([self.world_size - m, self.world_height - m])
        goal = rng.uniform(lo, hi)
        for _ in range(1000):
            block = rng.uniform(lo, hi)
            if np.linalg.norm(block - goal) >= self.goal_size:
                break
        else:  # pragma: no cover - the constructor guarantees room
            raise RuntimeError("could not place the block away from the goal")
        clearance = self.block_size / math.sqrt(2) + self.agent_radius + 0.05
        r = self.agent_radius + 0.01
        for _ in range(1000):
            agent = rng.uniform([r, r], [self.world_size - r, self.world_height - r])
            if np.linalg.norm(agent - block) >= clearance:
                break
        else:  # pragma: no cover
            raise RuntimeError("could not place the agent away from the block")
        self._build(
            agent_pos=agent,
            agent_vel=np.zeros(2),
            agent_radius=self.agent_radius,
            agent_mass=self.agent_mass,
            block_pos=block,
            block_vel=np.zeros(2),
            block_angle=rng.uniform(-math.pi, math.pi),
            block_angular_vel=0.0,
            block_size=self.block_size,
            block_mass=self.block_mass,
            goal_pos=goal,
            goal_size=self.goal_size,
        )
        return self._frame.copy(), {"state": self.get_state()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        try:
            a = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError):
            a = None
        # Accept any float dtype (float64 from numpy code is common) as long as values are in the box.
        if a is None or not self.action_space.contains(a):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        if self._space is None:
            raise RuntimeError("call reset() or set_state() before step()")
        fx, fy = (float(v) * self.max_force for v in a)
        agent = self._agent
        dt = 1.0 / (self.fps * self.substeps)
        for _ in range(self.substeps):
            # pymunk clears forces after every step; the damping term is explicit (c * dt / m << 1).
            vx, vy = agent.velocity
            agent.force = (fx - self.agent_damping * vx, fy - self.agent_damping * vy)
            self._space.step(dt)
        previous, self._distance = self._distance, self._block_goal_distance()
        success = self._distance <= self.goal_tolerance
        reward = previous - self._distance + (self.success_bonus if success else 0.0)
        self._frame = self._render_frame()
        return self._frame.copy(), float(reward), bool(success), False, {"state": self.get_state()}

    def render(self) -> np.ndarray:
        """Return the current frame, ``(H, W, 3)`` uint8 (the same image as the last observation)."""
        if self._frame is None:
            raise RuntimeError("call reset() or set_state() before render()")
        return self._frame.copy()

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, np.ndarray]:
        """The true physical state as float64 arrays (see the class docstring for the keys)."""
        if self._space is None:
            raise RuntimeError("call reset() or set_state() before get_state()")
        agent, block = self._agent, self._block
        return {
            "agent_pos": np.array(tuple(agent.position)),
            "agent_vel": np.array(tuple(agent.velocity)),
            "agent_radius": np.array(self._sizes["agent_radius"]),
            "agent_mass": np.array(agent.mass),
            "block_pos": np.array(tuple(block.position)),
            "block_vel": np.array(tuple(block.velocity)),
            "block_angle": np.array(block.angle),
            "block_angular_vel": np.array(block.angular_velocity),
            "block_size": np.array(self._sizes["block_size"]),
            "block_mass": np.array(block.mass),
            "goal_pos": self._goal_pos.copy(),
            "goal_size": np.array(self._goal_size),
            "world_size": np.array([self.world_size, self.world_height]),
            "scale": np.array(self.scale),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Restart the world from a state dict (as returned by ``get_state``) and return the new frame.

        The pymunk space is rebuilt, so ``get_state()`` then returns exactly these values and the frame
        equals the one rendered at this state. Sizes, masses and the goal are taken from ``state``;
        ``world_size`` and ``scale`` must match this env. The next step's reward is measured from the
        block-to-goal distance of ``state``. pymunk's cached contact and friction-joint impulses (warm
        starting) are not part of the state, so a trajectory continued from a restored state can drift by
        small amounts from the original while the agent is pushing the block.

        Raises:
            ValueError: naming the key that is missing, has the wrong shape or an invalid value.
        """
        s = _validate_state(state, _STATE_SHAPES)
        for key, expected in (("world_size", [self.world_size, self.world_height]), ("scale", self.scale)):
            if not np.allclose(s[key], expected, rtol=1e-9, atol=0.0):
                raise ValueError(f"state[{key!r}] = {s[key]} does not match this env's {key} {expected}")
        for key in ("agent_radius", "agent_mass", "block_size", "block_mass", "goal_size"):
            if s[key] <= 0:
                raise ValueError(f"state[{key!r}] must be positive, got {s[key]}")
        self._build(**{k: v for k, v in s.items() if k not in ("world_size", "scale")})
        return self._frame.copy()

    # ------------------------------------------------------------------ heuristic

    def heuristic_action(self) -> np.ndarray:
        """Circle round to the side of the block facing away from the goal, then push it toward the goal.

        Away from that spot the agent orbits the block at a safe distance (the shorter way round) so it
        does not knock the block off course; once behind it and roughly on the block-goal line it pushes
        along that line while steering back onto it. Deterministic given the state.
        """
        if self._space is None:
            raise RuntimeError("call reset() or set_state() before heuristic_action()")
        agent = np.array(tuple(self._agent.position))
        vel = np.array(tuple(self._agent.velocity))
        block = np.array(tuple(self._block.position))
        to_goal = self._goal_pos - block
        dist = float(np.linalg.norm(to_goal))
        u = to_goal / dist if dist > 1e-9 else np.array([1.0, 0.0])  # push direction
        perp = np.array([-u[1], u[0]])
        rel = agent - block
        along, lateral = float(rel @ u), float(rel @ perp)
        half, r = 0.5 * self._sizes["block_size"], self._sizes["agent_radius"]
        clearance = half * math.sqrt(2) + r + 0.15  # orbit radius: the block's corners never touch the agent
        if along < -half and abs(lateral) < 0.5 * half:
            # Push: full force along the line, plus a correction that pulls the agent back onto it.
            direction = u - 4.0 * lateral * perp
            return _unit_clip(direction)
        # Angle of the agent around the block, measured from the spot behind it (0 = directly behind).
        theta = math.atan2(-lateral, -along)
        step = math.copysign(min(abs(theta), 0.7), theta)
        behind = -u
        c, s = math.cos(theta - step), math.sin(theta - step)
        heading = np.array([c * behind[0] - s * behind[1], s * behind[0] + c * behind[1]])
        radius = clearance if abs(theta) > 0.3 else half + r + 0.05
        target = block + radius * heading
        return _unit_clip(4.0 * (target - agent) - 0.8 * vel)

    # ------------------------------------------------------------------ internals

    def _build(
        self,
        agent_pos: np.ndarray,
        agent_vel: np.ndarray,
        agent_radius: float | np.ndarray,
        agent_mass: float | np.ndarray,
        block_pos: np.ndarray,
        block_vel: np.ndarray,
        block_angle: float | np.ndarray,
        block_angular_vel: float | np.ndarray,
        block_size: float | np.ndarray,
        block_mass: float | np.ndarray,
        goal_pos: np.ndarray,
        goal_size: float | np.ndarray,
    ) -> None:
        space = pymunk.Space()
        space.gravity = (0.0, 0.0)
        space.collision_slop = 0.002  # the default 0.1 would be 1.6 px of overlap at 16 px per unit
        w, h, t = self.world_size, self.world_height, _WALL_THICKNESS
        for a, b in (
            ((-t, -t), (-t, h + t)),
            ((w + t, -t), (w + t, h + t)),
            ((-t, -t), (w + t, -t)),
            ((-t, h + t), (w + t, h + t)),
        ):
            seg = pymunk.Segment(space.static_body, a, b, t)
            seg.elasticity, seg.friction = 0.0, self.friction
            space.add(seg)

        agent_radius, agent_mass = float(agent_radius), float(agent_mass)
        agent = pymunk.Body(agent_mass, math.inf)  # never rotates, so the state needs no agent angle
        agent.position = tuple(float(v) for v in agent_pos)
        agent.velocity = tuple(float(v) for v in agent_vel)
        disk = pymunk.Circle(agent, agent_radius)
        disk.elasticity, disk.friction = 0.0, self.friction
        space.add(agent, disk)

        block_size, block_mass = float(block_size), float(block_mass)
        block = pymunk.Body(block_mass, pymunk.moment_for_box(block_mass, (block_size, block_size)))
        block.position = tuple(float(v) for v in block_pos)
        block.velocity = tuple(float(v) for v in block_vel)
        block.angle = float(block_angle)
        block.angular_velocity = float(block_angular_vel)
        box = pymunk.Poly.create_box(block, (block_size, block_size))
        box.elasticity, box.friction = 0.0, self.friction
        space.add(block, box)

        # Top-down floor friction: joints to the static body that only resist velocity (max_bias = 0) and
        # saturate at the Coulomb force, so they act exactly like sliding friction.
        for body, mass in ((agent, agent_mass), (block, block_mass)):
            pivot = pymunk.PivotJoint(space.static_body, body, (0.0, 0.0), (0.0, 0.0))
            pivot.max_bias, pivot.max_force = 0.0, self.friction * mass * _G
            space.add(pivot)
        gear = pymunk.GearJoint(space.static_body, block, 0.0, 1.0)
        gear.max_bias = 0.0
        gear.max_force = self.friction * block_mass * _G * _SQUARE_FRICTION_ARM * block_size
        space.add(gear)

        self._space, self._agent, self._block = space, agent, block
        self._sizes = {"agent_radius": agent_radius, "block_size": block_size}
        self._goal_pos = np.array(goal_pos, dtype=np.float64)
        self._goal_size = float(goal_size)
        self._distance = self._block_goal_distance()
        self._frame = self._render_frame()

    def _block_goal_distance(self) -> float:
        return float(np.linalg.norm(np.array(tuple(self._block.position)) - self._goal_pos))

    def _render_frame(self) -> np.ndarray:
        height_px, width_px = self.frame_size
        canvas = new_canvas(height_px, width_px, self.BACKGROUND_COLOR)
        goal = rect_vertices(self._goal_pos, (self._goal_size, self._goal_size))
        draw_polygon(canvas, world_to_px(goal, self.scale, height_px), self.GOAL_COLOR)
        size = self._sizes["block_size"]
        block = rect_vertices(tuple(self._block.position), (size, size), self._block.angle)
        draw_polygon(canvas, world_to_px(block, self.scale, height_px), self.BLOCK_COLOR)
        center = world_to_px(tuple(self._agent.position), self.scale, height_px)
        draw_disk(canvas, center, self._sizes["agent_radius"] * self.scale, self.AGENT_COLOR)
        return to_uint8(canvas)


def _unit_clip(v: np.ndarray) -> np.ndarray:
    """Scale ``v`` down to norm <= 1 (keeping its direction) as a float32 action."""
    n = float(np.linalg.norm(v))
    return (v / n if n > 1.0 else v).astype(np.float32).clip(-1.0, 1.0)
