"""The agent benchmark: dream-trained vs real-trained under one real-frame budget, over seeds.

Three arms per world, each run once per seed (every run resumes, finished runs are skipped):

- ``dream``: the world-model loop (:mod:`agents.loop`) spending ``real_frames`` real frames;
- ``real``: the same SB3 algorithm trained directly on the real world for ``real_frames`` steps;
- ``real_large``: the same on ``large_frames`` steps, the reference ceiling;
- ``oracle`` (diagnostic, not run by default): the same loop with a perfect world model
  (``LoopConfig.oracle``): the same collection and budget, the same agent steps, but every dream
  episode restarts the real world from a true state of the store and ends at ``max_episode_steps``.
  It bounds what any world model can teach under the loop's protocol: the dream arm's gap to it is
  the model's error, its gap to the ceiling the protocol's.

Every finished run's final policy is then scored on the same ``score_episodes`` real episodes
(seed 0), the number the arms are ranked on: ten episodes of a run's own evaluation are too few to
rank PPO from pixels, and each run draws different ones. The score is cached in ``score.json`` with
the policy's digest, so a policy trained on (a loop given more ``final_agent_steps``) is scored
again.

Then :func:`summarise` reads whatever has finished and writes ``benchmark.json``, ``table.md``
and ``curves.png`` (real return against real frames spent, per arm, mean over seeds; and the
dream's reward per step beside the real world's for the same policies, where exploitation of a
model error shows). Layout: ``<out>/<world>/<arm>_<budget>/seed<k>/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simworld.checkpoint import atomic_write_text
from simworld.worlds import WorldConfig

DEFAULT_ARMS = ("dream", "real", "real_large")
ARMS = (*DEFAULT_ARMS, "oracle")
LOOP_ARMS = ("dream", "oracle")  # run by the world-model loop (the oracle with the real world as its model)
SCORE_FILE, SCORE_SEED = "score.json", 0


@dataclass
class BenchConfig:
    """Everything :func:`run_benchmark` needs (the loop's and the agent's fields as there)."""

    world: dict[str, Any] = field(default_factory=lambda: asdict(WorldConfig()))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    real_frames: int = 20_000
    large_frames: int = 100_000
    iterations: int = 4
    model_steps: int = 400
    model: dict[str, Any] = field(default_factory=dict)
    agent_steps: int = 10_000
    final_agent_steps: int = 0  # the loop's extra dream steps after its last real frames (see LoopConfig)
    max_episode_steps: int = 15
    collect_random: float = 0.0  # the loop's share of random collection steps (see LoopConfig)
    reward_mode: str = "expected"  # how the loop's dream pays (see AgentConfig.reward_mode)
    reward_contact_gap: float | None = None  # the loop's dream pays only shown contacts (see AgentConfig)
    termination_floor_gap: float | None = None  # the loop's dream ends only at shown floor hits (AgentConfig)
    termination_bounds: dict[int, float] | None = None  # the dream ends past these (LoopConfig)
    action_guidance: float | None = None  # the dream's action guidance (LoopConfig); None: the model's
    agent: str = "ppo"
    num_envs: int = 8
    frame_stack: int = 4
    agent_kwargs: dict[str, Any] = field(default_factory=lambda: {"n_steps": 128})
    eval_points: int = 5  # real-world evaluations along each real-trained run (the curves)
    eval_episodes: int = 10
    score_episodes: int = 30  # every finished run's policy on the same real episodes (0: off)
    readout: str | None = None  # the dream arm's per-state action effect (see LoopConfig.readout)
    out: str = "runs/bench"
    run: bool = True  # False: only summarise what has finished
    device: str = "cpu"
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ValueError(f"unknown arms {bad}; choose from {ARMS}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        from agents.train import check_dream_rewards

        check_dream_rewards(self.reward_mode, self.reward_contact_gap, self.termination_floor_gap)
        if self.score_episodes < 0:
            raise ValueError(f"score_episodes must be >= 0 (0: no score), got {self.score_episodes}")


def budget_name(frames: int) -> str:
    return f"{frames // 1000}k" if frames % 1000 == 0 else str(frames)


def budget(cfg: BenchConfig, arm: str) -> int:
    """Real frames an arm may spend."""
    return cfg.large_frames if arm == "real_large" else cfg.real_frames


def run_dir(cfg: BenchConfig, arm: str, seed: int) -> Path:
    name = "real" if arm == "real_large" else arm
    return Path(cfg.out) / cfg.world["name"] / f"{name}_{budget_name(budget(cfg, arm))}" / f"seed{seed}"


def policy_path(cfg: BenchConfig, arm: str, seed: int) -> Path:
    """The final policy of one run (the loop's agent for the dream arm)."""
    from agents.train import LAST_FILE

    path = run_dir(cfg, arm, seed)
    return path / "agent" / LAST_FILE if arm in LOOP_ARMS else path / LAST_FILE


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _current_score(cfg: BenchConfig, arm: str, seed: int, digest: str | None = None) -> dict[str, Any] | None:
    """The cached score of a run's policy as it is now (none, stale or of other episodes: None);
    ``digest``: the policy's, when the caller has it."""
    file, policy = run_dir(cfg, arm, seed) / SCORE_FILE, policy_path(cfg, arm, seed)
    if not (file.exists() and policy.exists()):
        return None
    score = json.loads(file.read_text())
    fresh = score["episodes"] == cfg.score_episodes and score["policy_sha256"] == (digest or _digest(policy))
    return score if fresh else None


def score_run(cfg: BenchConfig, arm: str, seed: int) -> dict[str, Any]:
    """A finished run's final policy on the ``score_episodes`` real episodes every run is scored on."""
    from agents.train import evaluate_agent

    policy = policy_path(cfg, arm, seed)
    digest = _digest(policy)
    cached = _current_score(cfg, arm, seed, digest)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    res = evaluate_agent(policy, cfg.world, cfg.score_episodes, seed=SCORE_SEED)
    score = {
        "policy": policy.name,
        "policy_sha256": digest,
        "episodes": cfg.score_episodes,
        "seed": SCORE_SEED,
        **{k: res[k] for k in ("mean_return", "std_return", "returns", "mean_length")},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(run_dir(cfg, arm, seed) / SCORE_FILE, json.dumps(score, indent=2))
    return score


def _finished(arm: str, path: Path, cfg: BenchConfig) -> bool:
    if arm in LOOP_ARMS:
        return _loop_done(_history(path), cfg)
    return (path / "result.json").exists()


def _loop_done(hist: list[dict[str, Any]], cfg: BenchConfig) -> bool:
    """All iterations ran and the agent has its final steps (more asked of a finished loop: not done)."""
    from agents.loop import final_timesteps

    return len(hist) >= cfg.iterations and hist[-1]["agent_steps"] >= final_timesteps(cfg)


def _history(path: Path) -> list[dict[str, Any]]:
    """The finished iterations of a loop run (none yet: empty)."""
    loop = path / "loop.json"
    return json.loads(loop.read_text())["history"] if loop.exists() else []


def run_one(cfg: BenchConfig, arm: str, seed: int) -> None:
    """Run (or resume) one arm for one seed, then score its policy (a finished, scored run: no work)."""
    if not _finished(arm, run_dir(cfg, arm, seed), cfg):
        _train_one(cfg, arm, seed)
    if cfg.score_episodes:
        score_run(cfg, arm, seed)


def _train_one(cfg: BenchConfig, arm: str, seed: int) -> None:
    from agents.loop import LOOP_FILE, LoopConfig, run_loop
    from agents.train import LAST_FILE, AgentConfig, train_agent

    path = run_dir(cfg, arm, seed)
    t0 = time.perf_counter()
    common = {
        "world": cfg.world,
        "agent": cfg.agent,
        "num_envs": cfg.num_envs,
        "frame_stack": cfg.frame_stack,
        "agent_kwargs": cfg.agent_kwargs,
        "eval_episodes": cfg.eval_episodes,
        "out": str(path),
        "seed": seed,
        "device": cfg.device,
        "num_threads": cfg.num_threads,
        "progress": cfg.progress,
    }
    if arm in LOOP_ARMS:
        run_loop(
            LoopConfig(
                **common,
                real_frames=cfg.real_frames,
                iterations=cfg.iterations,
                model_steps=cfg.model_steps,
                model=cfg.model,
                agent_steps=cfg.agent_steps,
                final_agent_steps=cfg.final_agent_steps,
                max_episode_steps=cfg.max_episode_steps,
                collect_random=cfg.collect_random,
                reward_mode=cfg.reward_mode,
                reward_contact_gap=cfg.reward_contact_gap,
                termination_floor_gap=cfg.termination_floor_gap,
                termination_bounds=cfg.termination_bounds,
                action_guidance=cfg.action_guidance,
                readout=cfg.readout,
                oracle=arm == "oracle",
                resume=(path / LOOP_FILE).exists(),
            )
        )
    else:
        frames = budget(cfg, arm)
        train_agent(
            AgentConfig(
                **common,
                env="real",
                timesteps=frames,
                eval_every=max(frames // cfg.eval_points, 1),
                ckpt_every=max(frames // cfg.eval_points, 1),
                resume=(path / LAST_FILE).exists(),
            )
        )
    wall = path / "wall.json"  # wall time of each call (a resumed run has several)
    calls = json.loads(wall.read_text()) if wall.exists() else []
    atomic_write_text(wall, json.dumps([*calls, round(time.perf_counter() - t0, 1)]))


def _eval_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(real frames spent, real mean return) along a real-trained run (its EvalCallback)."""
    ev = path / "eval" / "evaluations.npz"
    if not ev.exists():
        return np.zeros(0), np.zeros(0)
    data = np.load(ev)
    return data["timesteps"], data["results"].mean(axis=1)


def summarise(cfg: BenchConfig) -> dict[str, Any]:
    """Collect every finished run into ``benchmark.json``, ``table.md`` and ``curves.png``."""
    root = Path(cfg.out) / cfg.world["name"]
    arms: dict[str, Any] = {}
    for arm in cfg.arms:
        runs = []
        for seed in cfg.seeds:
            path = run_dir(cfg, arm, seed)
            if arm in LOOP_ARMS:
                # an unfinished loop counts with its last finished iteration (its real frames say so)
                hist = _history(path)
                if not hist:
                    continue
                last, finished = hist[-1], _loop_done(hist, cfg)
                ret, frames = last["real_mean_return"], last["real_frames"]
                extra = {k: last[k] for k in last if k.startswith(("dream_", "real_reward", "real_mean_len"))}
                steps = np.array([h["real_frames"] for h in hist])
                curve = np.array([h["real_mean_return"] for h in hist])
                gap = [h for h in hist if "policy_return" in h]  # loops run before it was recorded lack it
                extra["policy_curve"] = {
                    "real_frames": [h["real_frames"] for h in gap],
                    **{k: [h["policy_return"][k] for h in gap] for k in ("dream", "real")},
                }
                if all("real_closed" in h["policy_return"] for h in gap):  # recorded since session 22
                    extra["policy_curve"]["real_closed"] = [h["policy_return"]["real_closed"] for h in gap]
            else:
                if not (path / "result.json").exists():
                    continue
                res = json.loads((path / "result.json").read_text())
                ret, frames, extra, finished = res["mean_return"], res["timesteps"], {}, True
                steps, curve = _eval_curve(path)
            wall = path / "wall.json"
            score = _current_score(cfg, arm, seed) if finished and cfg.score_episodes else None
            if score is not None:
                extra["score"] = {k: score[k] for k in ("mean_return", "std_return", "episodes")}
            runs.append(
                {
                    "seed": seed,
                    "finished": finished,
                    "real_return": ret,
                    "real_frames": int(frames),
                    "wall_s": sum(json.loads(wall.read_text())) if wall.exists() else None,
                    "curve": {"real_frames": steps.tolist(), "real_return": curve.tolist()},
                    **extra,
                }
            )
        if runs:
            r = np.array([x["real_return"] for x in runs])
            arms[arm] = {"mean": float(r.mean()), "std": float(r.std()), "runs": runs}
            if all("score" in x for x in runs):  # the per-seed scores: mean +- std over seeds
                s = np.array([x["score"]["mean_return"] for x in runs])
                arms[arm]["score"] = {"mean": float(s.mean()), "std": float(s.std())}
    summary = {"world": cfg.world.get("id"), "config": asdict(cfg), "arms": arms}
    done = all(r["finished"] for a in arms.values() for r in a["runs"])
    if done and "dream" in arms and "real_large" in arms:
        # ranked on the shared episodes where every run of both arms has its score
        key = "score" if "score" in arms["dream"] and "score" in arms["real_large"] else None
        dream, ceiling = (arms[a][key]["mean"] if key else arms[a]["mean"] for a in ("dream", "real_large"))
        if ceiling > 0:
            summary["dream_vs_ceiling"] = dream / ceiling
            summary["ceiling_basis"] = "score" if key else "evaluation"
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "benchmark.json", json.dumps(summary, indent=2))
    atomic_write_text(root / "table.md", table(summary))
    if arms:
        plot_curves(root / "curves.png", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    """The benchmark as a markdown table."""
    names = {
        "dream": "dream-trained (loop)",
        "real": "real-trained",
        "real_large": "real-trained, large",
        "oracle": "the loop with a perfect model (oracle)",
    }
    n = summary["config"].get("score_episodes", 0)
    lines = [
        f"{summary['world']}: real-world return, mean +- std over seeds",
        "",
        "| arm | real frames | seeds | return (its own evaluation) | per seed | "
        f"score (the same {n} episodes) | per seed | wall time per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in summary["arms"].items():
        frames = sorted({r["real_frames"] for r in a["runs"]})
        walls = [r["wall_s"] for r in a["runs"] if r["wall_s"]]
        wall = f"{np.mean(walls) / 60:.0f} min" if walls else "n/a"
        per_seed = ", ".join(f"{r['real_return']:.1f}" + ("" if r["finished"] else "*") for r in a["runs"])
        score = f"{a['score']['mean']:.2f} +- {a['score']['std']:.2f}" if "score" in a else "n/a"
        scores = ", ".join(f"{r['score']['mean_return']:.1f}" if "score" in r else "-" for r in a["runs"])
        lines.append(
            f"| {names[arm]} | {'/'.join(map(str, frames))} | {len(a['runs'])} | "
            f"{a['mean']:.2f} +- {a['std']:.2f} | {per_seed} | {score} | {scores} | {wall} |"
        )
    if any(not r["finished"] for a in summary["arms"].values() for r in a["runs"]):
        lines += ["", "\\* unfinished: the last finished iteration of the loop (see its real frames)"]
    if "dream_vs_ceiling" in summary:
        basis = f"scores, the same {n} episodes" if summary["ceiling_basis"] == "score" else "own evaluations"
        lines += [
            "",
            f"dream-trained / large-budget real: {100 * summary['dream_vs_ceiling']:.0f} % ({basis})",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, summary: dict[str, Any]) -> Path:
    """Left: real return vs real frames per arm (mean over seeds). Right: reward per step, dream vs real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dream_runs = summary["arms"].get("dream", {}).get("runs", [])
    has_policy = any((r.get("policy_curve") or {}).get("real_frames") for r in dream_runs)
    # the right panel only where a dream was checked against the world (not for the oracle alone)
    fig, axes = plt.subplots(1, 2 if has_policy else 1, figsize=(10 if has_policy else 5.5, 3.4), dpi=110)
    ax, bx = (axes[0], axes[1]) if has_policy else (axes, None)
    for arm, a in summary["arms"].items():
        curves = [r["curve"] for r in a["runs"] if r["curve"]["real_frames"]]
        if not curves:
            continue
        n = min(len(c["real_frames"]) for c in curves)
        x = np.array(curves[0]["real_frames"][:n])
        y = np.array([c["real_return"][:n] for c in curves])
        ax.plot(x, y.mean(0), marker="o", label=f"{arm} ({len(curves)} seeds)")
        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("real frames spent")
    ax.set_ylabel("real-world return")
    ax.legend(fontsize=8)
    for i, r in enumerate(dream_runs):
        c = r.get("policy_curve") or {"real_frames": []}
        if c["real_frames"]:
            lines = (
                ("dream", "tab:orange", "--", "dream"),
                ("real", "tab:blue", "-", "world, replaying the dream's actions"),
                ("real_closed", "tab:green", "-", "world, acting on its frames"),
            )
            for key, color, style, name in lines:
                if key in c:
                    label = f"{name} (same starts)" if i == 0 else None
                    bx.plot(c["real_frames"], c[key], style, marker="o", color=color, label=label)
    if has_policy:
        bx.set_xlabel("real frames spent (loop iteration)")
        bx.set_ylabel(f"return over the {summary['config']['max_episode_steps']}-step horizon")
        bx.set_title("dream-trained policy: the dream's return vs the world's", fontsize=9)
        if bx.get_legend_handles_labels()[0]:
            bx.legend(fontsize=7)
    fig.suptitle(summary["world"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_benchmark(cfg: BenchConfig | dict[str, Any]) -> dict[str, Any]:
    """Run every missing arm x seed (resuming unfinished ones), then summarise."""
    if isinstance(cfg, dict):
        cfg = BenchConfig(**cfg)
    if cfg.run:
        for arm in cfg.arms:
            for seed in cfg.seeds:
                run_one(cfg, arm, seed)
    summary = summarise(cfg)
    print(table(summary))
    return summary
