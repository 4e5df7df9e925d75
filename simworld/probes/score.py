"""Score a world model's dreams (in and out of distribution), or any video file with its sidecar.

Every probe is reported beside its floors: the same probe on the ground-truth video from the same
start, and on that video passed through the model's tokenizer (what the dynamics could at best
reproduce). Comparison probes on the ground-truth floor compare it with a second ground-truth run
from a start jittered by ``jitter`` units (Physics-IQ's physical variance).

Splits follow PhyWorld: ``id`` draws starts from the world the model was trained on; an
out-of-distribution split overrides world parameters (e.g. radii and speeds outside the training
ranges) and draws its starts, context frames included, from that world.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simworld.probes.compare import action_responsiveness
from simworld.probes.suite import per_step_errors, score_video
from simworld.probes.tracker import check_frames, track
from simworld.probes.world import WorldSpec

ID_SPLIT: dict[str, dict[str, Any]] = {"id": {}}
PHYWORLD_SPLITS: dict[str, dict[str, Any]] = {
    "id": {},
    # radii and speeds outside the training ranges (0.4-0.7 units, 1-3 units/s)
    "ood": {"radius_range": [0.25, 0.35], "speed_range": [3.5, 5.0]},
}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        v = np.array([r.get(k, math.nan) for r in rows], float)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return out


def tokenizer_roundtrip(model: Any, frames: np.ndarray) -> np.ndarray:
    """``frames (T, H, W, 3)`` encoded and decoded by the model's tokenizer, as uint8."""
    import torch

    from simworld.models.tokenizer import frames_to_tensor, tensor_to_frames

    with torch.no_grad():
        x = frames_to_tensor(frames[None], model.device)  # (1, t, 3, H, W)
        y = model.decode(model.encode(x))[0]  # (t', 3, H, W)
    out = tensor_to_frames(y)
    return out[: len(frames)]


def _real_env(model: Any, overrides: dict[str, Any]) -> Any:
    from simworld.rollout import make_real_world

    return make_real_world(model, overrides)


def fresh_start(model: Any, overrides: dict[str, Any], seed: int, frames: int) -> dict[str, Any]:
    """A context window of ``frames`` real frames (heuristic actions) from the world with ``overrides``."""
    env = _real_env(model, overrides)
    obs, info = env.reset(seed=seed)
    out, acts = [obs], []
    for _ in range(frames - 1):
        a = env.unwrapped.heuristic_action()
        obs, *_ = env.step(a)
        out.append(obs)
        acts.append(a)
    state = env.unwrapped.get_state()
    env.close()
    return {"frames": np.stack(out), "actions": np.array(acts), "state": state}


def _twin(
    model: Any, state: dict[str, np.ndarray], actions: np.ndarray, jitter: float, seed: int
) -> np.ndarray:
    """Ground truth again from a start whose ball positions moved by ~``jitter`` units."""
    env = _real_env(model, {})
    env.reset(seed=seed)
    s = {k: np.array(v, copy=True) for k, v in state.items()}
    rng = np.random.default_rng(seed)
    if "ball_pos" in s:
        s["ball_pos"] = s["ball_pos"] + rng.normal(0, jitter, s["ball_pos"].shape) * s["ball_mask"][:, None]
    frames = [env.unwrapped.set_state(s)]
    for a in actions:
        obs, *_ = env.step(a)
        frames.append(obs)
    env.close()
    return np.stack(frames)


def _branch_actions(space: Any, steps: int) -> list[np.ndarray]:
    """Constant action scripts that command distinct motions: every discrete action, or +-x, +-y forces."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return [np.full(steps, space.start + i, np.int64) for i in range(space.n)]
    dirs = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    return [np.tile(np.array(d, np.float32), (steps, 1)) for d in dirs]


def score_checkpoint(
    checkpoint: str | Path | Any,
    rollouts: int = 8,
    steps: int = 48,
    splits: dict[str, dict[str, Any]] | None = None,
    policy: Any = "heuristic",
    seed: int = 0,
    device: str = "cpu",
    jitter: float = 1e-3,
    responsiveness_steps: int = 8,
    keep: int = 2,
) -> dict[str, Any]:
    """Roll out a world model from real starts and score the dreams against ground truth.

    Args:
        checkpoint: a world-model directory or a loaded ``WorldModel``.
        rollouts: rollouts per split.
        steps: imagined steps per rollout.
        splits: split name -> world-parameter overrides (default: :data:`PHYWORLD_SPLITS`).
        policy: actions for the rollouts (see ``simworld.rollout.resolve_policy``).
        seed: base seed; rollout ``i`` of every split uses ``seed + i``.
        device: torch device.
        jitter: start perturbation (units) of the ground-truth twin that measures physical variance.
        responsiveness_steps: length of the constant-action branches of the responsiveness probe.
        keep: trajectories per split kept in the result (``"trajectories"``) for videos and plots.

    Returns:
        ``{"world_id", "spec", "splits": {name: {"overrides", "dream", "real", "tokenizer",
        "responsiveness", "horizon", "rollouts", "trajectories"}}}``; ``dream``/``real``/``tokenizer``
        hold each probe's mean over rollouts.
    """
    from simworld.rollout import rollout
    from simworld.world_model import WorldModel

    model = (
        checkpoint if isinstance(checkpoint, WorldModel) else WorldModel.from_pretrained(checkpoint, device)
    )
    model.eval()
    splits = PHYWORLD_SPLITS if splits is None else splits
    bank = getattr(model, "start_bank", None)
    t0 = int(bank["frames"].shape[1]) if bank is not None else model.context
    result: dict[str, Any] = {"world_id": model.cfg.world_id, "splits": {}}
    for name, overrides in splits.items():
        overrides = dict(overrides or {})
        spec = WorldSpec.from_world(model.cfg.world_id, {**model.cfg.world_params, **overrides})
        dream_rows, real_rows, tok_rows, horizon, trajs = [], [], [], [], []
        for i in range(rollouts):
            start = fresh_start(model, overrides, seed + i, t0)
            traj = rollout(
                model, policy, steps, start=start, seed=seed + i, device=device,
                compare_real=True, restart_on_real_end=False,
            )  # fmt: skip
            real = traj.real_frames
            twin = _twin(model, start["state"], traj.actions, jitter, seed + i)
            tok = tokenizer_roundtrip(model, real)
            dream_rows.append(score_video(traj.frames, spec, reference=real, variance_reference=twin))
            real_rows.append(score_video(real, spec, reference=twin))
            tok_rows.append(score_video(tok, spec, reference=real, variance_reference=twin))
            err = per_step_errors(traj.frames, real, spec)
            horizon.append({k: err[k] for k in ("position", "velocity", "psnr")})
            if len(trajs) < keep:
                trajs.append(traj)
        branches = _branch_actions(model.action_space, responsiveness_steps)
        start = fresh_start(model, overrides, seed, t0)
        dream_b, real_b = [], []
        for acts in branches:
            tr = rollout(model, acts, len(acts), start=start, seed=seed, device=device, compare_real=True,
                         restart_on_real_end=False)  # fmt: skip
            dream_b.append(tr.frames)
            real_b.append(tr.real_frames)
        resp = {}
        if spec.agent is not None:
            resp = {
                "dream": action_responsiveness(dream_b, branches, spec),
                "real": action_responsiveness(real_b, branches, spec),
            }
        with np.errstate(all="ignore"):
            hz = {k: np.nanmean(np.stack([h[k] for h in horizon]), axis=0) for k in horizon[0]}
        result["splits"][name] = {
            "overrides": overrides,
            "spec": spec.to_dict(),
            "dream": _mean(dream_rows),
            "real": _mean(real_rows),
            "tokenizer": _mean(tok_rows),
            "responsiveness": resp,
            "horizon": {k: v.tolist() for k, v in hz.items()},
            "rollouts": dream_rows,
            "trajectories": trajs,
        }
    return result


# ---------------------------------------------------------------------- video files


@dataclass
class Sidecar:
    """What a video file needs beside its pixels: the world, and optionally actions, states, truth.

    The JSON file holds ``{"spec": WorldSpec.to_dict()}`` or ``{"world_id": ..., "world_params": {...}}``,
    and optionally ``"actions"`` (``T - 1`` entries), ``"states"`` (key -> ``T`` entries) and
    ``"reference"`` (a ground-truth video, relative to the sidecar).
    """

    spec: WorldSpec
    actions: np.ndarray | None = None
    states: dict[str, np.ndarray] | None = None
    reference: Path | None = None


def write_sidecar(
    path: str | os.PathLike,
    spec: WorldSpec,
    actions: np.ndarray | Sequence | None = None,
    states: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]] | None = None,
    reference: str | None = None,
) -> Path:
    """Write a video's sidecar JSON (``states`` as a dict of ``(T, ...)`` arrays or a list of ``T`` dicts)."""
    d: dict[str, Any] = {"spec": spec.to_dict()}
    if actions is not None:
        d["actions"] = np.asarray(actions).tolist()
    if states is not None:
        if not isinstance(states, dict):
            states = {k: np.stack([s[k] for s in states]) for k in states[0]}
        d["states"] = {k: np.asarray(v).tolist() for k, v in states.items()}
    if reference is not None:
        d["reference"] = str(reference)
    path = Path(path)
    path.write_text(json.dumps(d))
    return path


def load_sidecar(path: str | os.PathLike, n_frames: int) -> Sidecar:
    """Read and check a sidecar for a video of ``n_frames`` frames.

    Raises:
        ValueError: naming the file, if it is missing, not JSON, describes no world, or its actions or
            states do not match the video's length.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"no sidecar {path}: a video needs a JSON file describing its world "
            '({"world_id": ..., "world_params": {...}} or {"spec": {...}}); see write_sidecar'
        )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(d).__name__}")
    if "spec" in d:
        spec = WorldSpec.from_dict(d["spec"])
    elif "world_id" in d:
        spec = WorldSpec.from_world(d["world_id"], d.get("world_params", {}))
    else:
        raise ValueError(f"{path} names no world: give 'spec' or 'world_id' (+ 'world_params')")
    actions = states = reference = None
    if d.get("actions") is not None:
        actions = np.asarray(d["actions"])
        if len(actions) != n_frames - 1:
            raise ValueError(
                f"{path} has {len(actions)} actions but the video has {n_frames} frames: "
                f"a video of T frames needs T - 1 = {n_frames - 1} actions"
            )
    if d.get("states") is not None:
        states = {k: np.asarray(v, float) for k, v in d["states"].items()}
        for k, v in states.items():
            if len(v) != n_frames:
                raise ValueError(
                    f"{path}: states[{k!r}] has {len(v)} entries but the video has {n_frames} frames "
                    "(one state per frame)"
                )
    if d.get("reference"):
        reference = (path.parent / d["reference"]).resolve()
    return Sidecar(spec, actions, states, reference)


def tracker_error(frames: np.ndarray, spec: WorldSpec, states: dict[str, np.ndarray]) -> float:
    """Mean distance (units) between tracked ball centres and the true ones in ``states`` (Balls keys)."""
    if "ball_pos" not in states:
        return math.nan
    tr = track(frames, spec)
    pos, mask = states["ball_pos"], states.get("ball_mask", np.ones(states["ball_pos"].shape[:2]))
    n = min(pos.shape[1], len(spec.objects))
    err = np.linalg.norm(tr.pos[:, :n] - pos[:, :n], axis=-1)
    ok = (mask[:, :n] > 0) & np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else math.nan


def score_file(
    video: str | os.PathLike,
    sidecar: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score a video file with the probes; its sidecar (default ``<video>.json``) names the world.

    Returns:
        ``{"warnings", "video", "frames", "spec", "scores", "reference": {...} or None, "tracker_error"}``
        where ``reference`` holds the ground-truth video's own law scores (its floor).

    Raises:
        ValueError: for an unreadable video, a bad sidecar, a sidecar of the wrong length, or a video
            (or reference) whose frame size does not match the world.
    """
    from simworld.data.video import read_video

    video = Path(video)
    frames, fps = read_video(video)
    side = load_sidecar(sidecar or video.with_suffix(".json"), len(frames))
    frames = check_frames(frames, side.spec, f"{video}: frames")
    if fps and abs(fps - side.spec.fps) > 0.01 * side.spec.fps:
        raise ValueError(
            f"{video} plays at {fps:g} fps but its world steps at {side.spec.fps:g} fps; "
            "the probes' velocities would be off by their ratio"
        )
    ref_path = Path(reference) if reference else side.reference
    ref = None
    if ref_path is not None:
        ref, _ = read_video(ref_path)
        ref = check_frames(ref, side.spec, f"{ref_path}: reference frames")
    scores = score_video(frames, side.spec, reference=ref)
    return {
        "warnings": _codec_warnings(video),
        "video": str(video),
        "frames": len(frames),
        "spec": side.spec.to_dict(),
        "scores": scores,
        "reference": None if ref is None else {"video": str(ref_path), "scores": score_video(ref, side.spec)},
        "tracker_error": tracker_error(frames, side.spec, side.states) if side.states else math.nan,
    }


def _codec_warnings(video: Path) -> list[str]:
    """Chroma subsampling smears the flat colours the tracker reads: say so rather than mislead."""
    import av

    with av.open(str(video)) as container:
        fmt = container.streams.video[0].codec_context.pix_fmt or ""
    if fmt.startswith(("yuv420", "yuvj420", "yuv422", "yuvj422", "nv12", "nv21")):
        return [
            f"{video.name} is stored as {fmt}: chroma subsampling blurs object colours at this frame size "
            "and inflates the probes' noise several-fold (thresholds were fixed on raw frames); write "
            "videos for probing with pix_fmt='yuv444p', crf=0"
        ]
    return []
