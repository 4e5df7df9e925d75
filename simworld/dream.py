"""``simworld dream``: the shipped Balls model dreaming beside the real world, as a video and a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simworld.plots import plot_series
from simworld.rollout import action_effect, rollout
from simworld.world_model import WorldModel

ASSETS = Path(__file__).parent / "assets"


def shipped_checkpoint(name: str = "balls") -> Path:
    """The world model shipped inside the package (``simworld/assets/<name>``)."""
    path = ASSETS / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no shipped model {name!r} in {ASSETS}; pass checkpoint=<dir> (see `simworld train`)"
        )
    return path


@dataclass
class DreamConfig:
    checkpoint: str | None = None  # None: the shipped Balls model
    steps: int = 300
    policy: str = "heuristic"
    seed: int = 0
    device: str = "cpu"
    out: str = "dream.mp4"
    summary: str = "dream.json"
    plot: str = "dream_psnr.png"
    upscale: int = 4
    progress: bool = True
    action_effect: int = 8  # starts for the action-effect check (simworld.rollout.action_effect); 0: skip
    # a state readout (`simworld train-readout`): the action effect per state dimension as well
    readout: str | None = None
    # with a readout: also each held-action step predicted from the real frames before it
    teacher_forced: bool = False
    action_guidance: float | None = None  # the dream's action guidance (None: the checkpoint's)


def _window_means(x: np.ndarray, edges: list[int]) -> dict[str, float]:
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        if lo < len(x):
            out[f"{lo + 1}-{min(hi, len(x))}"] = float(np.mean(np.minimum(x[lo:hi], 100.0)))
    return out


def run_dream(cfg: DreamConfig) -> dict[str, Any]:
    ckpt = cfg.checkpoint or shipped_checkpoint()
    model = WorldModel.from_pretrained(ckpt, cfg.device)  # once, for the rollout and the action check
    model.set_sampling(action_guidance=cfg.action_guidance)
    traj = rollout(
        model,
        cfg.policy,
        cfg.steps,
        seed=cfg.seed,
        device=cfg.device,
        compare_real=True,
        progress=cfg.progress,
    )
    traj.to_video(cfg.out, upscale=cfg.upscale)
    psnr = traj.psnr
    summary = {
        "checkpoint": str(ckpt),
        "action_guidance": model.diffusion.action_guidance,
        "steps": int(len(traj.actions)),
        "steps_per_s": traj.info["steps_per_s"],
        "psnr_mean": float(np.mean(np.minimum(psnr, 100.0))),
        "psnr_by_steps": _window_means(psnr, [0, 1, 10, 50, 100, 200, 300, 10**9]),
        "real_episodes_restarted_at": traj.info["restarts"],
        "reward_dream": float(traj.rewards.sum()),
        "reward_real": float(traj.real_rewards.sum()),
        "terminations_dream": int(traj.terminated.sum()),
        "terminations_real": int(traj.real_terminated.sum()),
        "video": str(cfg.out),
    }
    if cfg.plot:
        plot_series(
            cfg.plot,
            {"dream vs real": psnr},
            "imagined step",
            "PSNR (dB)",
            "dream vs ground truth (dashed: real episode restarted)",
            traj.info["restarts"],
        )
        summary["plot"] = str(cfg.plot)
    if cfg.action_effect:
        readout = None
        if cfg.readout:
            from simworld.probes.readout import load_readout

            readout, _ = load_readout(cfg.readout)
        summary["action_effect"] = action_effect(
            model,
            starts=cfg.action_effect,
            steps=10,
            seed=cfg.seed,
            readout=readout,
            teacher_forced=cfg.teacher_forced,  # read through the readout: off without one
        )
    Path(cfg.summary).write_text(json.dumps(summary, indent=2))
    print(
        f"dreamed {summary['steps']} steps at {summary['steps_per_s']:.1f} steps/s beside the real world; "
        f"PSNR {summary['psnr_mean']:.1f} dB on average"
    )
    print("PSNR by steps:", ", ".join(f"{k}: {v:.1f}" for k, v in summary["psnr_by_steps"].items()))
    print(
        f"reward dream {summary['reward_dream']:.1f} vs real {summary['reward_real']:.1f}; terminations dream "
        f"{summary['terminations_dream']} vs real {summary['terminations_real']}"
    )
    if cfg.action_effect:
        print(
            f"action effect (opposite actions held {len(summary['action_effect']['dream'])} steps, "
            f"{cfg.action_effect} starts): the dream's frames "
            f"move {summary['action_effect']['ratio']:.2f}x as much as the real world's"
        )
        if readout is not None:
            ratios = ", ".join(f"{r:.2f}x" for r in summary["action_effect"]["state_ratio"])
            print(f"  read as states ({cfg.readout}), per dimension: {ratios}")
            if cfg.teacher_forced:
                ratios = ", ".join(f"{r:.2f}x" for r in summary["action_effect"]["state_ratio_teacher"])
                print(f"  each step predicted from the real frames before it, per dimension: {ratios}")
        e, h = summary["action_effect"]["ended"], summary["action_effect"]["held_return"]
        print(
            f"  each action held: episodes ended dream {_per_action(e['dream'])} vs real "
            f"{_per_action(e['real'])}; return dream {_per_action(h['dream'])} vs real {_per_action(h['real'])}"
        )
    print(
        f"wrote {cfg.out} (real | dream | difference), {cfg.summary}" + (f", {cfg.plot}" if cfg.plot else "")
    )
    return summary


def _per_action(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)
