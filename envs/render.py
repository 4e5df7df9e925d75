"""A tiny antialiased numpy rasteriser for the ground-truth worlds.

Shapes are drawn into an ``(H, W, 3)`` float32 canvas holding values in ``[0, 255]`` and converted to
``uint8`` once at the end. Pixel ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)`` in pixel
coordinates (x to the right, y down). Antialiasing uses the coverage rule
``clip(0.5 - signed_distance, 0, 1)`` at pixel centres, which for a disk is
``clip(radius - distance + 0.5, 0, 1)``. Every draw call only touches the shape's bounding box, so a
frame with a handful of shapes costs tens of microseconds.

Objects are painted in flat colours on a flat background so that a colour-segmentation tracker can
recover positions from frames; the palette below is shared by all worlds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Color = tuple[float, float, float]

BACKGROUND: Color = (0.0, 0.0, 0.0)
RED: Color = (255.0, 40.0, 40.0)
GREEN: Color = (40.0, 220.0, 40.0)
BLUE: Color = (40.0, 90.0, 255.0)
LIGHT_GREY: Color = (200.0, 200.0, 200.0)
ORANGE: Color = (255.0, 150.0, 0.0)
MUTED_GREEN: Color = (60.0, 110.0, 60.0)


def new_canvas(height: int, width: int, color: Color = BACKGROUND) -> np.ndarray:
    """Return an ``(height, width, 3)`` float32 canvas filled with ``color``."""
    canvas = np.empty((height, width, 3), dtype=np.float32)
    for i in range(3):  # per-channel scalar fills are several times faster than broadcasting a colour
        canvas[..., i] = color[i]
    return canvas


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round a float canvas to an ``(H, W, 3)`` uint8 image."""
    return np.clip(canvas + 0.5, 0.0, 255.0).astype(np.uint8)


def world_to_px(xy: np.ndarray | Sequence[float], scale: float, height_px: int) -> np.ndarray:
    """Map world coordinates (y up, origin at the bottom-left corner) to pixel coordinates (y down).

    Args:
        xy: ``(..., 2)`` world positions.
        scale: pixels per world unit.
        height_px: image height in pixels.

    Returns:
        ``(..., 2)`` float64 pixel positions ``(x_px, y_px)``.
    """
    xy = np.asarray(xy, dtype=np.float64)
    px = np.empty_like(xy)
    px[..., 0] = xy[..., 0] * scale
    px[..., 1] = height_px - xy[..., 1] * scale
    return px


def _box(
    lo_x: float, hi_x: float, lo_y: float, hi_y: float, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    # One extra pixel on every side covers the 0.5 px antialiasing fringe whatever the rounding.
    c0 = max(math.floor(lo_x) - 1, 0)
    c1 = min(math.ceil(hi_x) + 1, shape[1])
    r0 = max(math.floor(lo_y) - 1, 0)
    r1 = min(math.ceil(hi_y) + 1, shape[0])
    return r0, r1, c0, c1


def _blend(canvas: np.ndarray, r0: int, c0: int, signed_distance: np.ndarray, color: Color) -> None:
    """Alpha-blend ``color`` with coverage ``clip(0.5 - signed_distance, 0, 1)`` into the canvas."""
    # ufuncs with out= instead of np.clip: the wrapper's overhead is comparable to the work at this size.
    coverage = np.subtract(0.5, signed_distance, dtype=np.float32)
    np.minimum(coverage, 1.0, out=coverage)
    np.maximum(coverage, 0.0, out=coverage)
    region = canvas[r0 : r0 + coverage.shape[0], c0 : c0 + coverage.shape[1]]
    region += coverage[..., None] * (np.array(color, dtype=np.float32) - region)


def draw_disk(
    canvas: np.ndarray, center_px: np.ndarray | Sequence[float], radius_px: float, color: Color
) -> None:
    """Paint an antialiased disk in place.

    Args:
        canvas: ``(H, W, 3)`` float32 canvas, modified in place.
        center_px: ``(x, y)`` centre in pixel coordinates.
        radius_px: radius in pixels.
        color: RGB in ``[0, 255]``.
    """
    cx, cy, r = float(center_px[0]), float(center_px[1]), float(radius_px)
    r0, r1, c0, c1 = _box(cx - r, cx + r, cy - r, cy + r, canvas.shape)
    if r0 >= r1 or c0 >= c1:
        return
    dx = np.arange(c0, c1, dtype=np.float32) + (0.5 - cx)  # (w,)
    dy = np.arange(r0, r1, dtype=np.float32) + (0.5 - cy)  # (h,)
    dist = np.sqrt(dx[None, :] ** 2 + dy[:, None] ** 2)  # (h, w)
    dist -= r  # signed distance to the circle
    _blend(canvas, r0, c0, dist, color)


def draw_polygon(
    canvas: np.ndarray, vertices_px: np.ndarray | Sequence[Sequence[float]], color: Color
) -> None:
    """Paint an antialiased convex polygon in place.

    The signed distance is the maximum over edges of the distance to each edge's line: exact inside the
    polygon and along the edges, and an underestimate just outside the corners, which therefore get a
    slightly squarer fringe (at most the half-pixel antialiasing band).

    Args:
        canvas: ``(H, W, 3)`` float32 canvas, modified in place.
        vertices_px: ``(N, 2)`` vertices in pixel coordinates, either winding order, ``N >= 3``.
        color: RGB in ``[0, 255]``.
    """
    v = np.asarray(vertices_px, dtype=np.float64)  # (n, 2)
    if v.ndim != 2 or v.shape[0] < 3 or v.shape[1] != 2:
        raise ValueError(f"vertices_px must have shape (N >= 3, 2), got {v.shape}")
    r0, r1, c0, c1 = _box(v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max(), canvas.shape)
    if r0 >= r1 or c0 >= c1:
        return
    # Plain Python for the few per-edge constants: numpy call overhead dominates at this size.
    pts = v.tolist()
    n = len(pts)
    area2 = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n))
    orient = 1.0 if area2 >= 0 else -1.0  # makes (ey, -ex) point outward whatever the winding
    xs = np.arange(c0, c1, dtype=np.float32) + 0.5  # (w,)
    ys = np.arange(r0, r1, dtype=np.float32) + 0.5  # (h,)
    sd = None
    for i in range(n):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % n]
        length = math.hypot(x1 - x0, y1 - y0)
        if length == 0.0:
            continue
        nx, ny = orient * (y1 - y0) / length, -orient * (x1 - x0) / length
        d = (nx * xs)[None, :] + (ny * ys - (nx * x0 + ny * y0))[:, None]  # (h, w) signed distance to edge i
        sd = d if sd is None else np.maximum(sd, d, out=sd)
    if sd is None:
        return
    _blend(canvas, r0, c0, sd, color)


def rect_vertices(
    center: np.ndarray | Sequence[float], size: Sequence[float], angle: float = 0.0
) -> np.ndarray:
    """Corners ``(4, 2)`` of a ``size = (width, height)`` rectangle centred at ``center``, rotated by ``angle``.

    Works in any frame; in world coordinates ``angle`` is counter-clockwise, as in pymunk.
    """
    hw, hh = 0.5 * float(size[0]), 0.5 * float(size[1])
    local = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])  # (4, 2)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.asarray(center, dtype=np.float64)
