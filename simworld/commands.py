"""Thin entry points behind ``simworld <command>``: config in, objects built, work run, summary out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def collect(cfg: DictConfig) -> dict:
    from simworld.data.collect import CollectConfig, collect
    from simworld.data.store import EpisodeStore
    from simworld.data.video import export_episode
    from simworld.worlds import WorldConfig

    c = _plain(cfg)
    video = c.pop("video")
    summary = collect(CollectConfig(world=WorldConfig(**c.pop("world")), **c))
    print(summary)
    if video and summary.episode_ids:
        store = EpisodeStore(summary.out)
        path = export_episode(store, summary.episode_ids[0], Path(summary.out) / "preview.mp4", upscale=4)
        print(f"preview of episode {summary.episode_ids[0]}: {path}")
    return vars(summary)


def export(cfg: DictConfig) -> str:
    from simworld.data.store import EpisodeStore
    from simworld.data.video import export_episode

    store = EpisodeStore(cfg.store)
    out = cfg.out or str(Path(cfg.store) / f"episode_{cfg.episode:06d}.mp4")
    path = export_episode(store, int(cfg.episode), out, upscale=int(cfg.upscale), crf=int(cfg.crf))
    print(f"wrote {path}")
    return str(path)


def import_(cfg: DictConfig) -> int:
    from simworld.data.collect import store_meta_for_world
    from simworld.data.store import EpisodeStore
    from simworld.data.video import import_video
    from simworld.worlds import WorldConfig

    if not cfg.video or not cfg.actions:
        raise ValueError("simworld import needs video=PATH and actions=PATH (npy, csv or json)")
    if (Path(cfg.store) / "meta.json").exists():
        store = EpisodeStore(cfg.store)
    else:  # a new store takes its action space and frame size from the world it belongs to
        store = EpisodeStore.create(cfg.store, store_meta_for_world(WorldConfig(**_plain(cfg.world))))
    eid = import_video(store, cfg.video, cfg.actions, resize=bool(cfg.resize))
    print(f"imported {cfg.video} as episode {eid} of {cfg.store}")
    return eid


def info(cfg: DictConfig) -> dict:
    from simworld.data.store import EpisodeStore, action_stats

    store = EpisodeStore(cfg.store)
    actions = action_stats(store)
    lengths = [store.lengths[e] for e in store.episode_ids]
    summary = {
        "store": str(cfg.store),
        "world_id": store.meta.world_id,
        "frame_size": list(store.meta.frame_size),
        "action_space": store.meta.action_space,
        "episodes": len(store),
        "steps": int(sum(lengths)),
        "frames": int(store.num_frames),
        "mean_length": float(sum(lengths) / max(len(lengths), 1)),
        "bytes_on_disk": int(store.bytes_on_disk()),
        # share of steps repeating the previous action; per-action step counts (Discrete)
        "action_repeat_share": actions["repeat_share"],
        "action_counts": actions["counts"],
    }
    print(json.dumps(summary, indent=2))
    return summary


def bench(cfg: DictConfig) -> dict:
    from simworld.bench import run_bench

    return run_bench(_plain(cfg))


def train_tokenizer(cfg: DictConfig) -> dict:
    from simworld.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    return train_tokenizer(TokenizerTrainConfig(**_plain(cfg)))


def train_readout(cfg: DictConfig) -> dict:
    from simworld.probes.readout import run_train_readout

    return run_train_readout(_plain(cfg))


def train(cfg: DictConfig) -> dict:
    from simworld.train.world_model import TrainConfig, train_world_model

    result = train_world_model(TrainConfig(**_plain(cfg)))
    print(f"trained {result['steps']} steps; model written to {result.get('model')}")
    return result


def motion_check(cfg: DictConfig) -> dict:
    from simworld.motion_check import MotionCheckConfig, run_motion_check

    return run_motion_check(MotionCheckConfig(**_plain(cfg)))


def eval_model(cfg: DictConfig) -> dict:
    from simworld.evaluate import EvalConfig, run_eval

    return run_eval(EvalConfig(**_plain(cfg)))


def dream(cfg: DictConfig) -> dict:
    from simworld.dream import DreamConfig, run_dream

    return run_dream(DreamConfig(**_plain(cfg)))


def rollout(cfg: DictConfig) -> dict:
    from simworld.dream import shipped_checkpoint
    from simworld.plots import plot_series
    from simworld.rollout import rollout

    c = _plain(cfg)
    ckpt = c["checkpoint"] or shipped_checkpoint()
    traj = rollout(
        ckpt,
        c["actions"],
        int(c["steps"]),
        seed=int(c["seed"]),
        device=c["device"],
        compare_real=bool(c["compare_real"]),
        progress=bool(c["progress"]),
    )
    out = Path(c["out"])
    traj.save(out.with_suffix(".npz"))
    traj.to_video(out.with_suffix(".mp4"), upscale=int(c["upscale"]))
    summary = {
        "steps": len(traj.actions),
        "reward": float(traj.rewards.sum()),
        "terminated_at": [int(i) for i in np.flatnonzero(traj.terminated)],
        "steps_per_s": traj.info["steps_per_s"],
    }
    if traj.psnr is not None:
        plot_series(
            out.with_name(out.name + "_psnr.png"),
            {"dream vs real": traj.psnr},
            "step",
            "PSNR (dB)",
            vlines=traj.info["restarts"],
        )
        summary["psnr_mean"] = float(np.mean(np.minimum(traj.psnr, 100.0)))
    print(json.dumps(summary))
    print(f"wrote {out.with_suffix('.npz')} and {out.with_suffix('.mp4')}")
    return summary


def play(cfg: DictConfig) -> dict:
    from simworld.play import PlayConfig, play

    return play(PlayConfig(**_plain(cfg)))


def export_model(cfg: DictConfig) -> str:
    import torch

    from simworld.world_model import WorldModel

    model = WorldModel.from_pretrained(cfg.model)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.dtype]
    path = model.save_pretrained(cfg.out, dtype=dtype)
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    print(f"wrote {path} ({size / 2**20:.1f} MiB, weights in {cfg.dtype})")
    return str(path)


def agent_train(cfg: DictConfig) -> dict:
    from agents.train import AgentConfig, train_agent

    result = train_agent(AgentConfig(**_plain(cfg)))
    print(json.dumps(result, indent=2))
    return result


def _policy_meta(policy: str) -> dict:
    """What a trained policy trained with (its ``agent.json``); nothing for random and readout ones."""
    from agents.train import policy_meta
    from simworld.probes.readout import readout_policy_folder

    return {} if policy == "random" or readout_policy_folder(policy) is not None else policy_meta(policy)


def dream_rewards_of(c: dict) -> tuple[str, float | None, float | None]:
    """How ``agent eval ... dream=`` runs the dream: ``(reward mode, contact gap, floor gap)`` from
    ``dream_reward_mode``, ``dream_reward_contact_gap`` and ``dream_termination_floor_gap`` where
    given (``off``: no check), else what the policy trained with (its ``agent.json``), else the
    expectation and no checks."""
    meta = _policy_meta(c["policy"])
    mode = c.get("dream_reward_mode") or meta.get("reward_mode", "expected")

    def gap(key: str, trained: str) -> float | None:
        value = c.get(key)
        if value is None:
            value = meta.get(trained)
        elif value == "off":
            value = None
        return None if value is None else float(value)

    return (
        mode,
        gap("dream_reward_contact_gap", "reward_contact_gap"),
        gap("dream_termination_floor_gap", "termination_floor_gap"),
    )


def dream_bounds_of(c: dict) -> tuple[str | None, dict[int, float] | None]:
    """The readout check ``agent eval ... dream=`` ends the dream with: ``dream_termination_bounds``
    (``off``: none) with ``dream_termination_readout``, else the policy's own (its ``agent.json``)."""
    bounds = c.get("dream_termination_bounds")
    if bounds == "off":
        return None, None
    meta = _policy_meta(c["policy"])
    if bounds is None:  # as trained; agent.json is JSON, so its state indices come back as strings
        readout, bounds = meta.get("termination_readout"), meta.get("termination_bounds")
    else:
        readout = c.get("dream_termination_readout") or meta.get("termination_readout")
    return readout, None if bounds is None else {int(k): float(v) for k, v in dict(bounds).items()}


def agent_eval(cfg: DictConfig) -> dict:
    from agents.train import evaluate_agent

    c = _plain(cfg)
    result = evaluate_agent(
        c["policy"],
        c.get("world"),
        episodes=c["episodes"],
        seed=c["seed"],
        video=c.get("video"),
        eyes=c.get("eyes"),
    )
    print(
        f"{result['world']}: return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
        f"over {result['episodes']} episodes (mean length {result['mean_length']:.0f})"
        + (f", the policy seeing {c['eyes']}'s one-step predictions" if c.get("eyes") else "")
    )
    ends = [e["obs"] for e in result.get("final_states", []) if "obs" in e]
    if ends and np.ndim(ends) == 2:  # what ended the episodes, e.g. CartPole [x, x_dot, theta, theta_dot]
        mean, peak = np.abs(ends).mean(0), np.abs(ends).max(0)
        print(
            "the world's state as episodes ended, mean |value| (max) per dimension: "
            + ", ".join(f"{m:.3g} ({x:.3g})" for m, x in zip(mean, peak, strict=True))
        )
    if c.get("dream"):  # the same policy from the model's real starts: dream vs world, same actions
        from simworld.rollout import policy_outcome

        mode, contact, floor = dream_rewards_of(c)
        readout, bounds = dream_bounds_of(c)
        gap = policy_outcome(
            c["dream"],
            c["policy"],
            starts=c["dream_starts"],
            steps=c["dream_steps"],
            seed=c["seed"],
            reward_mode=mode,
            reward_contact_gap=contact,
            termination_floor_gap=floor,
            termination_readout=readout,
            termination_bounds=bounds,
        )
        result["dream_vs_real"] = {
            **gap,
            "reward_mode": mode,
            "reward_contact_gap": contact,
            "termination_floor_gap": floor,
            "termination_readout": readout,
            "termination_bounds": bounds,
        }
        print(
            f"from {gap['starts']} real starts, {gap['steps']} steps (dream rewards: {mode}"
            f"{'' if contact is None else f', contact check {contact}'}"
            f"{'' if floor is None else f', floor check {floor}'}"
            f"{'' if bounds is None else f', readout check {bounds}'}): return in the dream "
            f"{gap['return']['dream']:.2f}, in the world {gap['return']['real']:.2f} replaying its actions "
            f"(overrating {gap['overrating']:+.2f}), {gap['return']['real_closed']:.2f} acting on the world's "
            f"frames; episodes ended {gap['ended']['dream']:.2f} vs {gap['ended']['real']:.2f} replayed, "
            f"{gap['ended']['real_closed']:.2f} acting"
        )
    if c.get("out"):
        from simworld.checkpoint import atomic_write_text

        atomic_write_text(c["out"], json.dumps(result, indent=2))
    return result


def agent_export(cfg: DictConfig) -> dict:
    from agents.train import AGENT_FILE, evaluate_agent, export_policy

    c = _plain(cfg)
    path = export_policy(c["policy"], c["out"])
    result: dict = {"policy": str(path), "bytes": path.stat().st_size}
    if c["eval_episodes"]:  # scored from the exported file itself, recorded beside it
        real = evaluate_agent(path, episodes=c["eval_episodes"], seed=c["seed"])
        keys = ("world", "episodes", "mean_return", "std_return", "mean_length")
        result["real"] = {k: real[k] for k in keys}
        meta_path = path.parent / AGENT_FILE
        meta = json.loads(meta_path.read_text())
        from simworld.checkpoint import atomic_write_text

        atomic_write_text(meta_path, json.dumps({**meta, "real_eval": result["real"]}, indent=2))
    print(
        f"wrote {path} ({result['bytes'] / 1e6:.1f} MB)"
        + (
            f"; real return {result['real']['mean_return']:.2f} +- {result['real']['std_return']:.2f} "
            f"over {result['real']['episodes']} episodes"
            if "real" in result
            else ""
        )
    )
    return result


def agent_loop(cfg: DictConfig) -> dict:
    from agents.loop import LoopConfig, run_loop

    return run_loop(LoopConfig(**_plain(cfg)))


def agent_bench(cfg: DictConfig) -> dict:
    from agents.benchmark import BenchConfig, run_benchmark

    return run_benchmark(BenchConfig(**_plain(cfg)))
