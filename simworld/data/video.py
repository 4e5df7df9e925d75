"""Video files in and out of the episode store (PyAV), action files, and PSNR.

``write_video`` makes h264 mp4 (or any codec/container PyAV knows, e.g. VP9 webm) for viewing
and sharing; ``import_video`` turns a video plus an action file into a store episode, so data
recorded elsewhere can train the world model.
"""

from __future__ import annotations

import json
import math
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import gymnasium as gym
import numpy as np

from simworld.data.atomic import atomic_path
from simworld.data.episode import Episode
from simworld.data.spaces import action_dtype, check_action_array
from simworld.data.store import EpisodeStore
from simworld.imaging import resize_frames

# Pixel formats whose chroma planes are halved in width (and height for 4:2:0): frames must be even.
_HALF_WIDTH = {"yuv420p", "yuvj420p", "nv12", "nv21", "yuv422p", "yuvj422p", "yuv420p10le"}
_HALF_HEIGHT = {"yuv420p", "yuvj420p", "nv12", "nv21", "yuv420p10le"}
_INT_RE = re.compile(r"^[+-]?\d+$")


class VideoReadError(ValueError):
    """A video file is missing, unreadable, or holds no video frames."""


def _codec_options(codec: str, crf: int) -> dict[str, str]:
    if codec in ("libvpx-vp9", "libvpx"):
        # Constant-quality mode needs b:v 0; crf 0 alone is not lossless in libvpx.
        opts = {"crf": str(crf), "b:v": "0", "deadline": "good", "cpu-used": "4"}
        if crf == 0 and codec == "libvpx-vp9":
            opts["lossless"] = "1"
        return opts
    if codec in ("libx264", "libx265"):
        return {"crf": str(crf), "preset": "medium"}
    return {}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    pix_fmt: str = "yuv420p",
    upscale: int = 1,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode frames to a video file, atomically (temp file + rename).

    The container comes from the extension (``.mp4``, ``.mkv``, ``.webm``...). The default h264
    ``yuv420p`` plays everywhere; ``pix_fmt="yuv444p"`` (h264 High 4:4:4) with ``crf=0`` is
    near-lossless (only the RGB<->YUV conversion rounds), for data rather than viewing.

    4:2:0 / 4:2:2 formats need even frame sizes; odd sizes raise rather than being silently
    padded, so that reading the file back gives the frame size that was written. Use an even
    ``upscale`` or ``pix_fmt="yuv444p"`` for odd-sized frames.

    Args:
        path: Output file.
        frames: ``uint8 (T, H, W, 3)`` RGB.
        fps: Frame rate.
        codec: Encoder name (``"libx264"``, ``"libvpx-vp9"``...).
        crf: Constant rate factor (quality; lower is better, 0 is lossless in YUV).
        pix_fmt: Encoder pixel format.
        upscale: Integer nearest-neighbour upscale factor, for viewing tiny frames.
        options: Extra encoder options, overriding the defaults chosen from ``codec`` and ``crf``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: For a bad frame array, fps, upscale, or an odd size with a subsampled pix_fmt.
    """
    path = Path(path)
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {got}")
    if len(frames) == 0:
        raise ValueError("cannot write a video with no frames")
    if not (isinstance(upscale, int) and upscale >= 1):
        raise ValueError(f"upscale must be an integer >= 1, got {upscale!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if upscale > 1:
        frames = frames.repeat(upscale, axis=1).repeat(upscale, axis=2)
    _, H, W, _ = frames.shape
    if (pix_fmt in _HALF_WIDTH and W % 2) or (pix_fmt in _HALF_HEIGHT and H % 2):
        raise ValueError(
            f"frame size {H}x{W} (H x W) must be even for pix_fmt={pix_fmt!r}; "
            "use an even upscale or pix_fmt='yuv444p'"
        )
    opts = {**_codec_options(codec, crf), **(options or {})}
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path, keep_suffix=True) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.options = opts
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))  # flush delayed frames
    return path


def read_video(path: str | os.PathLike, *, size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame of the first video stream.

    Args:
        path: Video file (mp4, mkv, webm, ...).
        size: Optional ``(H, W)`` to resize to, with antialiased bilinear filtering.

    Returns:
        ``(frames, fps)``: ``uint8 (T, H, W, 3)`` RGB and the stream's average frame rate.

    Raises:
        VideoReadError: If the file is missing, not a video, or has no decodable frames.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: cannot read video, no such file")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: cannot read video, the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoReadError(f"{path}: cannot read video ({e})") from None
    if not frames:
        raise VideoReadError(f"{path}: cannot read video, no frames could be decoded")
    out = np.stack(frames)
    if size is not None:
        out = resize_frames(out, size)
    return out, float(rate) if rate else 0.0


def _parse_csv(text: str) -> np.ndarray:
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    cells = [[c.strip() for c in row.split(",")] for row in rows]
    if cells:
        try:
            [float(c) for c in cells[0]]
        except ValueError:
            cells = cells[1:]  # a header row
    if not cells:
        return np.zeros(0, np.float32)
    width = len(cells[0])
    for i, row in enumerate(cells):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} columns, expected {width}")
    is_int = all(_INT_RE.match(c) for row in cells for c in row)
    arr = np.array(cells, dtype=np.int64 if is_int else np.float64)  # raises ValueError on a bad cell
    return arr[:, 0] if width == 1 else arr


def load_actions(path: str | os.PathLike, action_space: gym.Space | None = None) -> np.ndarray:
    """Read one action per step from ``.npy``, ``.csv`` or ``.json``.

    ``.csv``: one row per step, one column per action dimension, optional header row.
    ``.json``: a list (of numbers or of lists), or ``{"actions": [...]}``.

    Without ``action_space``, integer data comes back as int64 (in csv/json: numbers written
    without a decimal point) and anything else as float32; a single csv column gives shape ``(T,)``.
    With ``action_space``, actions are reshaped to ``(T, *shape)``, cast to the space's dtype
    (int64 for Discrete; integral floats are accepted) and checked to lie in the space.

    Raises:
        ValueError: Naming the file, if it is missing, unparsable, of another extension, or its
            actions do not fit ``action_space``.
    """
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            arr = _parse_csv(path.read_text())
        elif ext == ".json":
            obj = json.loads(path.read_text())
            if isinstance(obj, dict):
                if "actions" not in obj:
                    raise ValueError('a JSON object must hold the list under "actions"')
                obj = obj["actions"]
            if not isinstance(obj, list):
                raise ValueError(f"expected a list of actions, got {type(obj).__name__}")
            arr = np.array(obj)
        else:
            raise ValueError(f"unsupported extension {ext!r} (use .npy, .csv or .json)")
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise ValueError(f"actions must be numbers of a regular shape, got dtype {arr.dtype}")
        arr = arr.astype(np.int64 if np.issubdtype(arr.dtype, np.integer) else np.float32)
        if arr.ndim == 0:
            raise ValueError("expected one action per step, got a single number")
        if action_space is not None:
            arr = _fit_to_space(arr, action_space)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load actions from {path}: {e}") from None
    return arr


def _fit_to_space(arr: np.ndarray, space: gym.Space) -> np.ndarray:
    T = arr.shape[0]
    dtype = action_dtype(space)
    if isinstance(space, gym.spaces.Discrete):
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise ValueError(f"actions for {space} must be whole numbers")
            arr = arr.astype(np.int64)
    else:
        shape = (T, *space.shape)
        if arr.size != math.prod(shape):
            raise ValueError(
                f"actions for {space} need {math.prod(space.shape)} values per step, got shape {arr.shape}"
            )
        arr = arr.reshape(shape)
    check_action_array(arr, space, T)
    return arr.astype(dtype)


def import_video(
    store: EpisodeStore,
    video_path: str | os.PathLike,
    actions_path: str | os.PathLike | np.ndarray,
    *,
    resize: bool = False,
    info: dict[str, Any] | None = None,
) -> int:
    """Append a recorded video and its actions to a store as one episode.

    The episode has zero rewards, no termination, ``truncated`` True at the last step, and no
    states (even if the store has ``state_keys``); ``info["source"]`` is ``"video"``, which is
    what lets a state-less episode into a store with states.

    Args:
        store: Destination store.
        video_path: Video with ``T + 1`` frames (mp4, mkv, webm, ...).
        actions_path: ``.npy`` / ``.csv`` / ``.json`` file (see :func:`load_actions`) or an array
            with the ``T`` actions taken between consecutive frames.
        resize: Resize frames to the store's frame size instead of refusing a different size.
        info: Extra episode info (JSON).

    Returns:
        The new episode id.

    Raises:
        VideoReadError: If the video cannot be read.
        ValueError: If the frame and action counts disagree, the frame size differs and
            ``resize`` is False, or the actions are not in the store's action space.
    """
    frames, fps = read_video(video_path)
    H, W = store.meta.frame_size
    if frames.shape[1:3] != (H, W):
        if not resize:
            raise ValueError(
                f"{video_path}: frames are {frames.shape[1]}x{frames.shape[2]} (H x W) but store "
                f"{store.root} holds {H}x{W}; pass resize=True to resize them"
            )
        frames = resize_frames(frames, (H, W))
    if isinstance(actions_path, np.ndarray):
        actions = _fit_to_space(actions_path, store.action_space)
    else:
        actions = load_actions(actions_path, store.action_space)
    T = len(frames) - 1
    if len(actions) != T:
        raise ValueError(
            f"{video_path} has {len(frames)} frames but {len(actions)} actions were given; "
            f"an episode needs one action between each pair of frames (n_actions = n_frames - 1 = {T})"
        )
    truncated = np.zeros(T, bool)
    if T > 0:
        truncated[-1] = True
    episode = Episode(
        frames=frames,
        actions=actions,
        rewards=np.zeros(T, np.float32),
        terminated=np.zeros(T, bool),
        truncated=truncated,
        states={},
        info={**(info or {}), "source": "video", "video_path": str(video_path), "video_fps": fps},
    )
    return store.append(episode)


def export_episode(
    store: EpisodeStore,
    eid: int,
    path: str | os.PathLike,
    *,
    upscale: int = 4,
    fps: float | None = None,
    **kwargs: Any,
) -> Path:
    """Write one stored episode's frames as a video (h264 mp4 by default).

    Args:
        store: The store.
        eid: Episode id.
        path: Output file.
        upscale: Nearest-neighbour upscale factor for viewing.
        fps: Frame rate; the store's ``meta.fps`` if None.
        **kwargs: Passed to :func:`write_video` (``codec``, ``crf``, ``pix_fmt``...).

    Returns:
        The written path.
    """
    frames = store.read_window(eid, 0, store.num_steps(eid) + 1)["frames"]
    return write_video(path, frames, fps or store.meta.fps, upscale=upscale, **kwargs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images or videos of the same shape.

    Returns ``inf`` for identical inputs.
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr needs arrays of the same shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
