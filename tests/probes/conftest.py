"""Hand-made videos for the probe tests: disks drawn with the worlds' own rasteriser."""

import numpy as np
import pytest

from envs.balls import BallsEnv
from envs.render import draw_disk, new_canvas, to_uint8, world_to_px
from simworld.probes.world import ObjectSpec, WorldSpec


def disk_spec(n: int = 1, gravity: float = 5.0, max_speed: float = 30.0) -> WorldSpec:
    """A 64x64 world, 10 units wide, with ``n`` ballistic disks in Balls' colours and no paddle."""
    names = ("red", "green", "blue")[:n]
    objects = tuple(
        ObjectSpec(nm, c, "disk", ballistic=True) for nm, c in zip(names, BallsEnv.BALL_COLORS, strict=False)
    )
    return WorldSpec((64, 64), 6.4, 15.0, objects, gravity=gravity, max_speed=max_speed)


def render(spec: WorldSpec, pos: np.ndarray, radius: float | np.ndarray = 0.6) -> np.ndarray:
    """Frames ``(T, 64, 64, 3)`` of disks at world positions ``pos (T, K, 2)`` (``nan``: not drawn)."""
    pos = np.asarray(pos, float)
    radius = np.broadcast_to(np.asarray(radius, float), pos.shape[:2])
    h, w = spec.frame_size
    out = []
    for t in range(len(pos)):
        canvas = new_canvas(h, w, spec.background)
        for k in range(pos.shape[1]):
            if np.isfinite(pos[t, k]).all():
                centre = world_to_px(pos[t, k], spec.scale, h)
                draw_disk(canvas, centre, radius[t, k] * spec.scale, spec.objects[k].color)
        out.append(to_uint8(canvas))
    return np.stack(out)


def ballistic(p0, v0, g: float, frames: int, fps: float = 15.0) -> np.ndarray:
    """``(T, 2)`` positions of free flight from ``p0`` with velocity ``v0`` under gravity ``g`` (down)."""
    t = np.arange(frames)[:, None] / fps
    return np.asarray(p0, float) + np.asarray(v0, float) * t + np.array([0.0, -0.5 * g]) * t**2


@pytest.fixture(scope="session")
def balls_clip():
    """A real 48-frame Balls clip with three balls (frames, states, actions)."""
    from simworld.probes.violations import record_clip

    return record_clip(3, 48, {"num_balls": 3})
