"""Balls: elastic balls bouncing in a box above a paddle, simulated with pymunk."""

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
    GREEN,
    LIGHT_GREY,
    RED,
    draw_disk,
    draw_polygon,
    new_canvas,
    rect_vertices,
    to_uint8,
    world_to_px,
)
from envs.validation import float_range as _float_range
from envs.validation import frame_size as _frame_size
from envs.validation import int_range as _int_range
from envs.validation import integer as _integer
from envs.validation import number as _number
from envs.validation import validate_state as _validate_state

_BALL, _PADDLE, _WALL, _FLOOR = 1, 2, 3, 4
_WALL_THICKNESS = 1.0  # walls are thick segments outside the world, so fast balls cannot tunnel through
_SPAWN_GAP = 0.05  # minimum clearance between balls at spawn, world units

_STATE_SHAPES = {
    "ball_pos": ("B", 2),
    "ball_vel": ("B", 2),
    "ball_radius": ("B",),
    "ball_mass": ("B",),
    "ball_mask": ("B",),
    "paddle_pos": (2,),
    "paddle_vel": (2,),
    "paddle_size": (2,),
    "gravity": (),
    "world_size": (2,),
    "scale": (),
}


class BallsEnv(gym.Env):
    """Side view of 1-3 elastic balls under gravity; keep them off the floor with a paddle.

    ## Description

    Balls bounce elastically off each other, the left and right walls, the ceiling and the paddle. The
    walls are the image edges (not drawn). A light-grey paddle near the bottom moves horizontally. The
    episode ends when any ball touches the floor (the bottom edge). Ball ``i`` is always painted in colour
    ``BALL_COLORS[i]`` (red, green, blue), the paddle in ``PADDLE_COLOR`` and the background in
    ``BACKGROUND_COLOR``, all flat, so a colour tracker can read positions from frames.

    World coordinates are metres-like with the origin at the bottom-left corner and y up; the image has
    row 0 at the top. ``scale = frame_width / world_width`` pixels per unit, and the world height is
    ``world_width * frame_height / frame_width``. Each action lasts ``1 / fps`` seconds, simulated as
    ``substeps`` pymunk steps.

    ## Action space

    ``Discrete(3)``:

    | action | meaning                                  |
    |--------|------------------------------------------|
    | 0      | move the paddle left at ``paddle_speed`` |
    | 1      | keep the paddle still                    |
    | 2      | move the paddle right at ``paddle_speed``|

    The paddle is a kinematic body clamped to the walls.

    ## Observation space

    The rendered frame, ``Box(0, 255, (H, W, 3), uint8)`` with ``(H, W) = frame_size``; ``render()``
    returns the same image.

    ## Rewards

    +1 each time a ball starts touching the paddle (from any side).

    ## Episode end

    - Termination: a ball touches the floor.
    - Truncation: only from ``max_episode_steps`` (1000 for ``simworld/Balls-v0``).

    ## Info

    ``info["state"]`` (also ``get_state()``) holds float64 arrays in world units; balls are padded to
    ``max_balls`` (the upper end of ``num_balls``), with zeros for absent slots:

    | key           | shape           | meaning                                          |
    |---------------|-----------------|--------------------------------------------------|
    | `ball_pos`    | (max_balls, 2)  | ball centres                                     |
    | `ball_vel`    | (max_balls, 2)  | ball velocities, units/s                         |
    | `ball_radius` | (max_balls,)    | radii                                            |
    | `ball_mass`   | (max_balls,)    | masses (density 1: mass = pi r^2)                |
    | `ball_mask`   | (max_balls,)    | 1 for a ball present in this episode, else 0     |
    | `paddle_pos`  | (2,)            | paddle centre                                    |
    | `paddle_vel`  | (2,)            | paddle velocity during the last step             |
    | `paddle_size` | (2,)            | paddle (width, height)                           |
    | `gravity`     | ()              | gravitational acceleration, positive = down      |
    | `world_size`  | (2,)            | (width, height) of the world                     |
    | `scale`       | ()              | pixels per world unit                            |

    ## Arguments

    - ``render_mode``: only ``"rgb_array"`` (or ``None``; frames are still the observations).
    - ``num_balls``: an int in 1..3, or an inclusive ``(low, high)`` range drawn each episode.
    - ``gravity``: units/s^2, positive pulls down. 5 gives falls of ~2 s across the 10-unit world.
    - ``restitution``: coefficient of restitution of every contact (1 = perfectly elastic).
    - ``radius_range``: ball radii are drawn uniformly from this range (units).
    - ``speed_range``: initial ball speeds are drawn uniformly from this range, in a random direction.
    - ``frame_size``: ``(height, width)`` of the frame in pixels.
    - ``world_width``: world width in units; the height follows the frame's aspect ratio.
    - ``substeps``: pymunk steps per action.
    - ``paddle_width``, ``paddle_height``: paddle size in units.
    - ``paddle_y``: height of the paddle centre above the floor.
    - ``paddle_speed``: paddle speed in units/s.
    - ``fps``: actions per simulated second (also ``metadata["render_fps"]``).

    Balls spawn at random non-overlapping positions in the upper half of the world. There is no
    friction and balls do not spin, so with ``restitution=1`` energy is conserved up to integration
    error (a ball bouncing on the still paddle keeps its apex height within about 1%).

    ## Version history

    - v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    BALL_COLORS = (RED, GREEN, BLUE)
    PADDLE_COLOR = LIGHT_GREY
    BACKGROUND_COLOR = BACKGROUND

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        num_balls: int | Sequence[int] = (1, 3),
        gravity: float = 5.0,
        restitution: float = 1.0,
        radius_range: Sequence[float] = (0.4, 0.7),
        speed_range: Sequence[float] = (1.0, 3.0),
        frame_size: Sequence[int] = (64, 64),
        world_width: float = 10.0,
        substeps: int = 10,
        paddle_width: float = 2.5,
        paddle_height: float = 0.4,
        paddle_y: float = 0.8,
        paddle_speed: float = 8.0,
        fps: int = 15,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.num_balls = _int_range("num_balls", num_balls, 1, len(self.BALL_COLORS))
        self.max_balls = self.num_balls[1]
        self.gravity = _number("gravity", gravity, low=0.0)
        self.restitution = _number("restitution", restitution, low=0.0, high=1.0)
        self.radius_range = _float_range("radius_range", radius_range, positive=True)
        self.speed_range = _float_range("speed_range", speed_range, positive=False)
        self.frame_size = _frame_size(frame_size)
        self.world_width = _number("world_width", world_width, low=0.0, strict=True)
        self.substeps = _integer("substeps", substeps, 1)
        self.paddle_width = _number("paddle_width", paddle_width, low=0.0, strict=True)
        self.paddle_height = _number("paddle_height", paddle_height, low=0.0, strict=True)
        self.paddle_y = _number("paddle_y", paddle_y, low=0.0, strict=True)
        self.paddle_speed = _number("paddle_speed", paddle_speed, low=0.0)
        self.fps = _integer("fps", fps, 1)

        height_px, width_px = self.frame_size
        self.scale = width_px / self.world_width
        self.world_height = self.world_width * height_px / width_px
        if self.paddle_width >= self.world_width:
            raise ValueError(
                f"paddle_width ({self.paddle_width}) must be smaller than world_width ({self.world_width})"
            )
        if (
            self.paddle_y - self.paddle_height / 2 <= 0
            or self.paddle_y + self.paddle_height / 2 >= self.world_height / 2
        ):
            raise ValueError(
                f"paddle_y ({self.paddle_y}) must keep the paddle above the floor and in the lower half"
            )
        r_max = self.radius_range[1]
        if (
            2 * r_max + _SPAWN_GAP > self.world_height / 2  # balls spawn in the upper half
            or self.max_balls * (2 * r_max + _SPAWN_GAP) > 0.5 * self.world_width
        ):
            raise ValueError(
                f"radius_range {self.radius_range} is too large for {self.max_balls} balls in the upper half "
                f"of a {self.world_width:g} x {self.world_height:g} world"
            )

        self.metadata = {**self.metadata, "render_fps": self.fps}
        self.action_space = spaces.Discrete(3)
        self.observation_space = spaces.Box(0, 255, (height_px, width_px, 3), dtype=np.uint8)

        self._space: pymunk.Space | None = None
        self._balls: list[pymunk.Body | None] = [None] * self.max_balls
        self._paddle: pymunk.Body | None = None
        self._paddle_size = np.array([self.paddle_width, self.paddle_height])
        self._gravity = self.gravity
        self._hits = 0
        self._floor_hit = False
        self._frame: np.ndarray | None = None

    @property
    def world_params(self) -> dict[str, Any]:
        """All constructor arguments, JSON-serialisable: ``BallsEnv(**env.world_params)`` rebuilds the env."""
        lo, hi = self.num_balls
        return {
            "render_mode": self.render_mode,
            "num_balls": lo if lo == hi else [lo, hi],
            "gravity": self.gravity,
            "restitution": self.restitution,
            "radius_range": list(self.radius_range),
            "speed_range": list(self.speed_range),
            "frame_size": list(self.frame_size),
            "world_width": self.world_width,
            "substeps": self.substeps,
            "paddle_width": self.paddle_width,
            "paddle_height": self.paddle_height,
            "paddle_y": self.paddle_y,
            "paddle_speed": self.paddle_speed,
            "fps": self.fps,
        }

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        n = int(rng.integers(self.num_balls[0], self.num_balls[1] + 1))
        pos = np.zeros((self.max_balls, 2))
        vel = np.zeros((self.max_balls, 2))
        radius = np.zeros(self.max_balls)
        for i in range(n):
            radius[i] = r = rng.uniform(*self.radius_range)
            for _ in range(1000):
                p = rng.uniform([r, self.world_height / 2 + r], [self.world_width - r, self.world_height - r])
                if all(np.linalg.norm(p - pos[j]) > r + radius[j] + _SPAWN_GAP for j in range(i)):
                    break
            else:  # pragma: no cover - the constructor keeps the spawn area roomy enough
                raise RuntimeError("could not place the balls without overlap")
            pos[i] = p
            speed, angle = rng.uniform(*self.speed_range), rng.uniform(0.0, 2 * math.pi)
            vel[i] = speed * math.cos(angle), speed * math.sin(angle)
        mask = (np.arange(self.max_balls) < n).astype(np.float64)
        self._build(
            ball_pos=pos,
            ball_vel=vel,
            ball_radius=radius,
            ball_mass=math.pi * radius**2,
            ball_mask=mask,
            paddle_pos=np.array([self.world_width / 2, self.paddle_y]),
            paddle_vel=np.zeros(2),
            paddle_size=np.array([self.paddle_width, self.paddle_height]),
            gravity=self.gravity,
        )
        return self._frame.copy(), {"state": self.get_state()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        if self._space is None:
            raise RuntimeError("call reset() or set_state() before step()")
        paddle = self._paddle
        half_w = self._paddle_size[0] / 2
        x = paddle.position.x
        target = float(
            np.clip(x + (int(action) - 1) * self.paddle_speed / self.fps, half_w, self.world_width - half_w)
        )
        # Kinematic bodies follow their velocity exactly, so this velocity lands the paddle on `target`.
        paddle.velocity = ((target - x) * self.fps, 0.0)
        self._hits = 0
        dt = 1.0 / (self.fps * self.substeps)
        for _ in range(self.substeps):
            self._space.step(dt)
        paddle.position = (target, paddle.position.y)  # remove float drift so clamping is exact
        self._frame = self._render_frame()
        return (
            self._frame.copy(),
            float(self._hits),
            bool(self._floor_hit),
            False,
            {"state": self.get_state()},
        )

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
        pos = np.zeros((self.max_balls, 2))
        vel = np.zeros((self.max_balls, 2))
        radius = np.zeros(self.max_balls)
        mass = np.zeros(self.max_balls)
        mask = np.zeros(self.max_balls)
        for i, body in enumerate(self._balls):
            if body is None:
                continue
            pos[i] = tuple(body.position)
            vel[i] = tuple(body.velocity)
            radius[i] = next(iter(body.shapes)).radius
            mass[i] = body.mass
            mask[i] = 1.0
        return {
            "ball_pos": pos,
            "ball_vel": vel,
            "ball_radius": radius,
            "ball_mass": mass,
            "ball_mask": mask,
            "paddle_pos": np.array(tuple(self._paddle.position)),
            "paddle_vel": np.array(tuple(self._paddle.velocity)),
            "paddle_size": self._paddle_size.copy(),
            "gravity": np.array(self._gravity),
            "world_size": np.array([self.world_width, self.world_height]),
            "scale": np.array(self.scale),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Restart the world from a state dict (as returned by ``get_state``) and return the new frame.

        The pymunk space is rebuilt, so ``get_state()`` then returns exactly these values and the frame
        equals the one rendered at this state. Balls, paddle size and gravity are taken from ``state``;
        ``world_size`` and ``scale`` must match this env. Contacts in progress are not part of the state:
        pymunk's cached contact impulses are lost, so a trajectory continued from a restored state can
        drift by tiny amounts from the original, and a ball touching the paddle at this moment counts as a
        new hit (+1) on the next step.

        Raises:
            ValueError: naming the key that is missing, has the wrong shape or an invalid value.
        """
        s = _validate_state(state, _STATE_SHAPES, self.max_balls)
        for key, expected in (("world_size", [self.world_width, self.world_height]), ("scale", self.scale)):
            if not np.allclose(s[key], expected, rtol=1e-9, atol=0.0):
                raise ValueError(f"state[{key!r}] = {s[key]} does not match this env's {key} {expected}")
        mask = s["ball_mask"]
        if not np.all((mask == 0.0) | (mask == 1.0)):
            raise ValueError(f"state['ball_mask'] must hold only 0 and 1, got {mask}")
        for key in ("ball_radius", "ball_mass"):
            if np.any(s[key][mask == 1.0] <= 0):
                raise ValueError(f"state[{key!r}] must be positive for present balls, got {s[key]}")
        if np.any(s["paddle_size"] <= 0):
            raise ValueError(f"state['paddle_size'] must be positive, got {s['paddle_size']}")
        if s["gravity"] < 0:
            raise ValueError(f"state['gravity'] must be >= 0, got {s['gravity']}")
        self._build(**{k: v for k, v in s.items() if k not in ("world_size", "scale")})
        return self._frame.copy()

    # ------------------------------------------------------------------ heuristic

    def heuristic_action(self) -> int:
        """Move the paddle under the predicted landing point of the ball that reaches it first.

        Landing points are ballistic predictions with reflections off the walls and the ceiling (ball-ball
        collisions are ignored; the prediction is redone every step). A dead zone of half a step's travel
        keeps the paddle from jittering. Deterministic given the state.
        """
        if self._space is None:
            raise RuntimeError("call reset() or set_state() before heuristic_action()")
        paddle_top = self._paddle.position.y + self._paddle_size[1] / 2
        landings = []  # (time, x) at which each ball comes down to the paddle top
        for body in self._balls:
            if body is None:
                continue
            r = next(iter(body.shapes)).radius
            t = _time_to_height(
                body.position.y, body.velocity.y, paddle_top + r, self.world_height - r, self._gravity
            )
            if t < math.inf:
                landings.append((t, _reflect(body.position.x + body.velocity.x * t, r, self.world_width - r)))
        landings.sort()
        half_w = self._paddle_size[0] / 2
        target = landings[0][1] if landings else self.world_width / 2
        if len(landings) > 1:
            # Catch the first ball off-centre, on the side of the next one, to get a head start on it.
            target += float(np.clip(landings[1][1] - target, -0.7 * half_w, 0.7 * half_w))
        target = float(np.clip(target, half_w, self.world_width - half_w))
        error = target - self._paddle.position.x
        if abs(error) < 0.5 * self.paddle_speed / self.fps:
            return 1
        return 2 if error > 0 else 0

    # ------------------------------------------------------------------ internals

    def _build(
        self,
        ball_pos: np.ndarray,
        ball_vel: np.ndarray,
        ball_radius: np.ndarray,
        ball_mass: np.ndarray,
        ball_mask: np.ndarray,
        paddle_pos: np.ndarray,
        paddle_vel: np.ndarray,
        paddle_size: np.ndarray,
        gravity: float | np.ndarray,
    ) -> None:
        space = pymunk.Space()
        self._gravity = float(gravity)
        space.gravity = (0.0, -self._gravity)
        # The default slop (0.1) is a quarter of a ball radius here: visible overlap at 64 px.
        space.collision_slop = 0.005
        # pymunk multiplies the two shapes' elasticities; sqrt makes every contact's restitution exact.
        elasticity = math.sqrt(self.restitution)
        w, h, t = self.world_width, self.world_height, _WALL_THICKNESS
        walls = [
            ((-t, -t), (-t, h + t), _WALL),
            ((w + t, -t), (w + t, h + t), _WALL),
            ((-t, h + t), (w + t, h + t), _WALL),
            ((-t, -t), (w + t, -t), _FLOOR),
        ]
        for a, b, kind in walls:
            seg = pymunk.Segment(space.static_body, a, b, t)
            seg.elasticity, seg.friction, seg.collision_type = elasticity, 0.0, kind
            space.add(seg)

        self._paddle_size = np.array(paddle_size, dtype=np.float64)
        paddle = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        paddle.position = tuple(float(v) for v in paddle_pos)
        paddle.velocity = tuple(float(v) for v in paddle_vel)
        box = pymunk.Poly.create_box(paddle, tuple(float(v) for v in self._paddle_size))
        box.elasticity, box.friction, box.collision_type = elasticity, 0.0, _PADDLE
        space.add(paddle, box)
        self._paddle = paddle

        self._balls = [None] * self.max_balls
        for i in np.flatnonzero(ball_mask):
            # Infinite moment: without friction balls never spin, and the state carries no spin.
            body = pymunk.Body(float(ball_mass[i]), math.inf)
            body.position = tuple(float(v) for v in ball_pos[i])
            body.velocity = tuple(float(v) for v in ball_vel[i])
            circle = pymunk.Circle(body, float(ball_radius[i]))
            circle.elasticity, circle.friction, circle.collision_type = elasticity, 0.0, _BALL
            space.add(body, circle)
            self._balls[i] = body

        space.on_collision(_BALL, _PADDLE, begin=self._on_paddle_hit)
        space.on_collision(_BALL, _FLOOR, begin=self._on_floor_hit)
        self._space = space
        self._hits = 0
        self._floor_hit = False
        self._frame = self._render_frame()

    def _on_paddle_hit(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: Any) -> None:
        self._hits += 1

    def _on_floor_hit(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: Any) -> None:
        self._floor_hit = True

    def _render_frame(self) -> np.ndarray:
        height_px, width_px = self.frame_size
        canvas = new_canvas(height_px, width_px, self.BACKGROUND_COLOR)
        corners = rect_vertices(tuple(self._paddle.position), self._paddle_size)
        draw_polygon(canvas, world_to_px(corners, self.scale, height_px), self.PADDLE_COLOR)
        for i, body in enumerate(self._balls):
            if body is None:
                continue
            r_px = next(iter(body.shapes)).radius * self.scale
            center = world_to_px(tuple(body.position), self.scale, height_px)
            draw_disk(canvas, center, r_px, self.BALL_COLORS[i])
        return to_uint8(canvas)


# ---------------------------------------------------------------------- prediction helpers


def _time_to_height(y: float, vy: float, y_target: float, ceiling: float, g: float) -> float:
    """Time until a ball at height ``y`` falls to ``y_target``, bouncing elastically off ``ceiling``."""
    if y < y_target:
        return math.inf  # already below the paddle top: lost, nothing to chase
    t = 0.0
    if vy > 0:
        rise = ceiling - y
        if g <= 0:
            return (rise + ceiling - y_target) / vy
        if vy * vy > 2 * g * rise:  # reaches the ceiling and comes back down faster
            t = (vy - math.sqrt(vy * vy - 2 * g * rise)) / g
            vy, y = -(vy - g * t), ceiling
    if g <= 0:
        return t + (y - y_target) / -vy if vy < 0 else math.inf
    return t + (vy + math.sqrt(vy * vy + 2 * g * (y - y_target))) / g


def _reflect(x: float, lo: float, hi: float) -> float:
    """Fold a straight-line coordinate back into ``[lo, hi]`` as elastic walls would."""
    span = hi - lo
    if span <= 0:
        return lo
    u = (x - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)
