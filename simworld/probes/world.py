"""What a probe may know about a world besides its pixels: render scale, gravity, colours, walls.

Probes read frames only; a ``WorldSpec`` tells them how to turn pixels into world units (``scale``
px/unit, y up from the bottom edge), which flat colour belongs to which object, which image edges are
solid walls, how strong gravity is and how fast anything could possibly move. It is plain data and
round-trips through JSON, so a video's sidecar file can carry it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Color = tuple[float, float, float]
WALLS = ("left", "right", "bottom", "top")
_BALL_NAMES = ("red", "green", "blue")


@dataclass(frozen=True)
class ObjectSpec:
    """One trackable object, painted in one flat colour.

    Attributes:
        name: label used in every probe output (``"red"``, ``"paddle"``...).
        color: RGB in ``[0, 255]``.
        shape: ``"disk"``, ``"box"`` (axis-aligned rectangle) or ``"square"`` (may rotate).
        ballistic: moves freely under gravity between contacts, so the law probes (inertia, gravity,
            conservation) apply to it.
        solid: other solid objects may not overlap it.
        agent: the actions move it (action responsiveness tracks it).
    """

    name: str
    color: Color
    shape: str = "disk"
    ballistic: bool = False
    solid: bool = True
    agent: bool = False


@dataclass(frozen=True)
class WorldSpec:
    """Metadata a probe needs to read physics off a world's frames.

    Attributes:
        frame_size: ``(H, W)`` in pixels.
        scale: pixels per world unit; world x = col / scale, world y = (H - row) / scale.
        fps: frames per second; one step lasts ``1 / fps`` seconds.
        objects: the coloured objects, in a fixed order (tracks follow it).
        background: RGB of the empty background.
        gravity: gravitational acceleration in units/s^2 pulling towards -y (0 for top-down worlds).
        walls: image edges that are solid walls (objects may not cross them).
        max_speed: the largest speed anything can reach in this world, units/s (continuity's bound).
        action_speed: agent speed in units/s per unit of action (``None``: the actions set a force,
            so only the direction of the response is checked).
        world_id: the Gymnasium id of the world, if any.
        world_params: its constructor arguments.
    """

    frame_size: tuple[int, int]
    scale: float
    fps: float
    objects: tuple[ObjectSpec, ...]
    background: Color = (0.0, 0.0, 0.0)
    gravity: float = 0.0
    walls: tuple[str, ...] = WALLS
    max_speed: float = math.inf
    action_speed: float | None = None
    world_id: str = ""
    world_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size must be (H, W) >= 1, got {self.frame_size}")
        if not self.scale > 0 or not self.fps > 0:
            raise ValueError(f"scale and fps must be > 0, got scale={self.scale}, fps={self.fps}")
        if not self.objects:
            raise ValueError("a WorldSpec needs at least one object colour to track")
        bad = set(self.walls) - set(WALLS)
        if bad:
            raise ValueError(f"unknown walls {sorted(bad)}; choose from {WALLS}")
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object names must be distinct, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    @property
    def dt(self) -> float:
        """Seconds per step."""
        return 1.0 / self.fps

    @property
    def world_size(self) -> tuple[float, float]:
        """``(width, height)`` of the visible world in units."""
        return self.frame_size[1] / self.scale, self.frame_size[0] / self.scale

    @property
    def agent(self) -> int | None:
        """Index of the object the actions move, if any."""
        return next((i for i, o in enumerate(self.objects) if o.agent), None)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no object {name!r} in this world; objects: {self.names}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``WorldSpec.from_dict`` inverts it)."""
        d = dataclasses.asdict(self)
        d["max_speed"] = None if math.isinf(self.max_speed) else self.max_speed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldSpec:
        d = dict(d)
        try:
            d["objects"] = tuple(ObjectSpec(**{**o, "color": tuple(o["color"])}) for o in d["objects"])
            d["frame_size"] = tuple(int(v) for v in d["frame_size"])
            d["background"] = tuple(d.get("background", (0.0, 0.0, 0.0)))
            d["walls"] = tuple(d.get("walls", WALLS))
            d["max_speed"] = math.inf if d.get("max_speed") is None else float(d["max_speed"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a valid world spec ({e}): {d}") from None

    # ------------------------------------------------------------------ from worlds

    @classmethod
    def from_env(cls, env: Any) -> WorldSpec:
        """Read the spec off a simworld physics world (``BallsEnv``, ``PushEnv``, or a wrapper of one).

        Duck-typed on the worlds' colour constants, so ``simworld`` does not import ``envs``.

        Raises:
            ValueError: for a world without flat object colours (use a learned state readout there).
        """
        u = getattr(env, "unwrapped", env)
        params = dict(getattr(u, "world_params", {}))
        params.pop("render_mode", None)
        world_id = getattr(getattr(env, "spec", None), "id", "") or ""
        if hasattr(u, "BALL_COLORS"):
            h_world = u.world_height
            # fastest ball: thrown at the top speed and fallen the full height, plus twice the paddle
            # speed that a moving paddle can add in one elastic side hit.
            v_max = math.sqrt(u.speed_range[1] ** 2 + 2 * u.gravity * h_world) + 2 * u.paddle_speed
            balls = [
                ObjectSpec(_BALL_NAMES[i], tuple(c), "disk", ballistic=True)
                for i, c in enumerate(u.BALL_COLORS[: u.max_balls])
            ]
            paddle = ObjectSpec("paddle", tuple(u.PADDLE_COLOR), "box", agent=True)
            return cls(
                frame_size=tuple(u.frame_size),
                scale=float(u.scale),
                fps=float(u.fps),
                objects=(*balls, paddle),
                background=tuple(u.BACKGROUND_COLOR),
                gravity=float(u.gravity),
                max_speed=v_max,
                action_speed=float(u.paddle_speed),
                world_id=world_id or "simworld/Balls-v0",
                world_params=params,
            )
        if hasattr(u, "AGENT_COLOR") and hasattr(u, "BLOCK_COLOR"):
            # terminal speed of the damped agent; a pushed block never outruns it
            v_max = u.max_force * math.sqrt(2) / max(u.agent_damping, 1e-6)
            return cls(
                frame_size=tuple(u.frame_size),
                scale=float(u.scale),
                fps=float(u.fps),
                objects=(
                    ObjectSpec("goal", tuple(u.GOAL_COLOR), "square", solid=False),
                    ObjectSpec("block", tuple(u.BLOCK_COLOR), "square"),
                    ObjectSpec("agent", tuple(u.AGENT_COLOR), "disk", agent=True),
                ),
                background=tuple(u.BACKGROUND_COLOR),
                gravity=0.0,
                max_speed=v_max,
                action_speed=None,
                world_id=world_id or "simworld/Push-v0",
                world_params=params,
            )
        raise ValueError(
            f"{type(u).__name__} has no flat object colours to track (BALL_COLORS / AGENT_COLOR); "
            "colour probes need a simworld physics world"
        )

    @classmethod
    def from_world(cls, world_id: str, world_params: dict[str, Any] | None = None) -> WorldSpec:
        """Build the world ``world_id`` with ``world_params`` (e.g. a checkpoint's) and read its spec."""
        import gymnasium as gym

        from simworld.registration import register_envs

        register_envs()
        params = {k: v for k, v in (world_params or {}).items() if k != "render_mode"}
        env = gym.make(world_id, **params)
        try:
            return cls.from_env(env)
        finally:
            env.close()

    def commanded_direction(self, action: Any) -> np.ndarray:
        """Unit-free direction ``(2,)`` in world axes that ``action`` tells the agent to move.

        Discrete paddle actions ``0, 1, 2`` mean left, stay, right; Box actions are a force ``(fx, fy)``.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.ndim == 0:
            return np.array([float(a) - 1.0, 0.0])
        return a.reshape(-1)[:2].copy()
