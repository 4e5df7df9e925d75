"""The world-model loop (as DIAMOND, Dreamer and IRIS run it) under a fixed budget of real frames.

Each iteration: collect real experience with the current policy (random before there is one) ->
update the world model on everything collected so far -> train the agent in the dream of the
updated model -> score it in the real world. ``real_frames`` real frames are spent in total, an
equal share per iteration; the real-world evaluation episodes are not counted (they measure, they
do not train). Every phase resumes: the store is append-only and counted, the world model and the
agent continue from their checkpoints, and ``loop.json`` records the finished iterations.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents.train import (
    LAST_FILE,
    AgentConfig,
    check_dream_rewards,
    evaluate_agent,
    load_policy,
    newest_frame,
    preprocess,
    train_agent,
)
from simworld.checkpoint import atomic_write_text
from simworld.data.collect import _Recorder, sample_action, store_meta_for_world
from simworld.data.store import EpisodeStore, action_stats
from simworld.probes.readout import load_readout
from simworld.train.world_model import TrainConfig
from simworld.worlds import WorldConfig, make_world

LOOP_FILE = "loop.json"
READOUT_FROM_STORE = "store"  # LoopConfig.readout: learn it from the first round's frames
READOUT_DIR = "readout"


@dataclass
class LoopConfig:
    """Everything :func:`run_loop` needs.

    Attributes:
        world: The real world (:class:`WorldConfig` fields).
        real_frames: The budget of real environment steps, spread evenly over ``iterations``.
        iterations: Collect / model / agent rounds.
        model_steps: World-model optimiser steps added per iteration.
        model: :class:`~simworld.train.world_model.TrainConfig` overrides (``dynamics``, ``window``, ...);
            ``dynamics`` and ``diffusion`` merge into the loop's recipe key by key.
        agent_steps: Agent steps in the dream added per iteration.
        agent: The SB3 algorithm (see :class:`~agents.train.AgentConfig`), with ``num_envs``,
            ``frame_stack``, ``termination_threshold``, ``reward_mode``, ``reward_contact_gap``,
            ``termination_floor_gap``, ``agent_kwargs`` as there (the round's dream-vs-world checks read the dream's rewards
            the same way).
        max_episode_steps: The imagination horizon: dream episodes start from real context windows
            of the store (the model's start bank, redrawn every iteration) and are truncated after
            this many steps, with the value function bootstrapping the rest (SB3 does this for
            truncations). Short horizons keep the agent where the model is still accurate (Dreamer
            and DIAMOND imagine 15 steps, IRIS 20); long ones let model errors compound.
        bank_size: Real context windows in the start bank (more: more varied dream starts).
        collect_random: Share of collection steps (after the first, random, iteration) that take a
            uniformly random action instead of the policy's. A policy's actions follow from its frames
            and repeat (CartPole's loop store: the same action as the step before 52 % of the time in
            the random round, 82 % in the last), so a model trained on them can predict the next frame
            without listening to the action; random steps keep the action informative.
        final_agent_steps: More dream agent steps in the last iteration, after the last real frames
            are collected and the model trained on them: compute, not real frames (CartPole: 60k more
            on the final model took a seed from 43 to 76 real return, docs/results.md session 14).
            Raised on a finished loop (``resume=True``), the agent trains on in the final model's dream,
            with ``agent_kwargs`` as given then (a lower ``learning_rate``, say: see ``train_agent``).
        eval_episodes: Real episodes scored after each iteration.
        readout: A ``simworld train-readout`` folder: each iteration also records how much the dream's
            *states* answer the actions (``dream_state_effect``, per state dimension; CartPole's pole
            can be deaf while the cart slides and fills the pixel ``dream_action_effect``).
            ``"store"``: learn it from the first round's frames and their recorded states, after
            they are collected (``<out>/readout``): no real frames beyond the loop's budget.
        termination_bounds: ``{state index: bound}``: the dream ends a step whose frames ``readout``
            reads past a bound (``AgentConfig.termination_bounds``, with ``readout`` as the
            ``termination_readout``); the round's dream-vs-world check ends them the same way.
        action_guidance: The dream's action guidance (``AgentConfig.action_guidance``), for the
            agent's dream and the round's checks (``dream_state_effect`` shows what it does). None:
            the checkpoint's (0). May change on resume, like ``termination_bounds``.
        oracle: Replace the world model by the real world (``envs.oracle``): no model is trained, and
            the agent trains on the real world restarted from the true states of the store's windows
            (``bank_size`` of them, ``model.bank_episode_starts`` at episode starts, redrawn every
            iteration), truncated at ``max_episode_steps``. The loop's protocol with a perfect model:
            what it cannot teach, no world model will under the same protocol. The dream checks of
            each round (action effect, ``policy_outcome``) are skipped; there is no dream to check.
        out: Run directory: ``store/``, ``model/`` (training run), ``agent/``, ``loop.json``.
    """

    world: dict[str, Any] = field(default_factory=lambda: asdict(WorldConfig()))
    real_frames: int = 20_000
    iterations: int = 5
    model_steps: int = 400
    model: dict[str, Any] = field(default_factory=dict)
    agent_steps: int = 50_000
    final_agent_steps: int = 0
    agent: str = "ppo"
    num_envs: int = 8
    frame_stack: int = 4
    max_episode_steps: int = 15
    termination_threshold: float | None = None
    reward_mode: str = "expected"
    reward_contact_gap: float | None = None
    termination_floor_gap: float | None = None
    bank_size: int = 1024
    collect_random: float = 0.0
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_episodes: int = 5
    readout: str | None = None
    termination_bounds: dict[int, float] | None = None
    action_guidance: float | None = None
    oracle: bool = False
    out: str = "runs/loop"
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.real_frames < self.iterations:
            raise ValueError("need iterations >= 1 and at least one real frame per iteration")
        if self.final_agent_steps < 0:
            raise ValueError(f"final_agent_steps must be >= 0, got {self.final_agent_steps}")
        if not 0.0 <= self.collect_random <= 1.0:
            raise ValueError(f"collect_random must be a share in [0, 1], got {self.collect_random}")
        check_dream_rewards(self.reward_mode, self.reward_contact_gap, self.termination_floor_gap)
        if self.termination_bounds is not None and not self.readout:
            raise ValueError(
                "termination_bounds needs a readout (a `simworld train-readout` folder) to read them"
            )


def collect_with_policy(
    world: dict[str, Any],
    store: EpisodeStore,
    frames: int,
    policy_path: Path | None,
    frame_stack: int,
    seed: int,
    progress: bool = True,
    random_share: float = 0.0,
) -> int:
    """Run the policy (random if None) in the real world until ``store`` holds ``frames`` real steps.

    ``random_share`` of the steps take a uniformly random action instead of the policy's. Whole
    episodes are appended (the last one may run past the target). Returns the steps taken.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    policy = None if policy_path is None else load_policy(policy_path)[0]
    env = make_world(world)
    venv = preprocess(DummyVecEnv([lambda: env]), frame_stack)  # the policy's view of the same env
    rng = np.random.default_rng(seed)
    taken = 0
    with tqdm(
        total=frames,
        initial=real_steps(store),
        desc="collect",
        disable=None if progress else True,
    ) as bar:
        while real_steps(store) < frames:
            episode_seed = int(rng.integers(2**31 - 1))
            venv.seed(episode_seed)
            obs = venv.reset()
            rec = _Recorder(newest_frame(obs), _state(venv.unwrapped.reset_infos[0]), episode_seed)
            done = False
            while not done:
                if policy is None or rng.random() < random_share:
                    action = np.array([sample_action(env.action_space, rng)])
                else:
                    action, _ = policy.predict(obs, deterministic=False)
                obs, reward, dones, infos = venv.step(action)
                done = bool(dones[0])
                frame = infos[0]["terminal_observation"] if done else obs[0]
                truncated = bool(infos[0].get("TimeLimit.truncated", False))
                term = done and not truncated
                rec.add(
                    action[0], newest_frame(frame[None]), float(reward[0]), term, truncated, _state(infos[0])
                )
                taken += 1
                bar.update(1)
            source = "random" if policy is None else str(policy_path)
            if policy is not None and random_share > 0:
                source += f" ({random_share:.0%} random steps)"
            store.append(rec.episode(env.action_space, {"policy": source}))
    venv.close()
    return taken


# the world model's architecture unless ``model.dynamics`` says otherwise: what `simworld train`
# builds by default (configs/dynamics/S.yaml); factorised attention trains 1.5x faster (docs/results.md)
LOOP_DYNAMICS = {
    "size": "S",
    "patch_size": 2,
    "context": 6,
    "attention": "factorised",
    "prev_frames": 2,
    "prev_actions": 1,
    "local_layers": 4,
}
# the `simworld train` recipe (configs/train.yaml; why: docs/results.md, sessions 5-8)
LOOP_DIFFUSION = {
    "termination_pos_weight": 1.0,
    "p_mean": 1.0,
    "p_std": 1.0,
    "residual": True,
    "sigma_max": 80.0,
    "sigma_max_fraction": 0.5,
}
# the loop's optimiser is TrainConfig's, which is `simworld train`'s (configs/train.yaml; tests check
# both). Until session 20 TrainConfig's lr was 3e-4 against train.yaml's 1e-3; at one round's 400
# steps 1e-3 predicts Balls better on every open-loop measure (docs/results.md, session 20)
LOOP_OPTIM = {k: getattr(TrainConfig, k) for k in ("lr", "warmup", "weight_decay", "grad_clip", "ema_decay")}


def real_steps(store: EpisodeStore) -> int:
    """Real environment steps in a store (an episode of T steps has T + 1 frames)."""
    return sum(store.lengths.values())


def _state(info: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in info.get("state", {}).items() if not k.startswith("_")}


def readout_path(cfg: LoopConfig) -> str | None:
    """Where the loop's readout lives: the one given, or the one it learnt from its store."""
    return str(Path(cfg.out) / READOUT_DIR) if cfg.readout == READOUT_FROM_STORE else cfg.readout


def _store_readout(store: EpisodeStore, path: Path, seed: int, progress: bool) -> Any:
    """A state readout learnt from the store's episodes (their recorded states): no new real frames."""
    from simworld.probes.readout import ReadoutConfig, save_readout, store_episodes, train_readout

    episodes, cfg = store_episodes(store), ReadoutConfig(epochs=40, seed=seed)
    model, report = train_readout(episodes, cfg)
    save_readout(model, cfg, path, store.meta.frame_size, report["floor"], store.meta.world_id)
    if progress:
        print(f"readout from {len(episodes)} stored episodes: held-out RMSE {report['floor']['rmse']}")
    return model


def run_loop(cfg: LoopConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the loop; returns its history: real frames used and real return per iteration.

    A finished loop resumed with more ``final_agent_steps`` trains its agent on in the last round.
    """
    from simworld.train.world_model import train_world_model

    if isinstance(cfg, dict):
        cfg = LoopConfig(**cfg)
    out = Path(cfg.out)
    state_path = out / LOOP_FILE
    if state_path.exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds a loop run: pass resume=true or another out=")
    state = json.loads(state_path.read_text()) if state_path.exists() else {"history": []}
    out.mkdir(parents=True, exist_ok=True)
    store = EpisodeStore.create(out / "store", store_meta_for_world(WorldConfig(**cfg.world)))
    per_iteration = cfg.real_frames // cfg.iterations
    model_dir, agent_dir = out / "model", out / "agent"
    readout, path = None, readout_path(cfg)
    if path and (cfg.readout != READOUT_FROM_STORE or Path(path).is_dir()):  # given, or learnt last time
        readout, _ = load_readout(path)
    for it in range(len(state["history"]), cfg.iterations):
        policy = agent_dir / LAST_FILE if (agent_dir / LAST_FILE).exists() else None
        before = set(store.episode_ids)
        collect_with_policy(
            cfg.world,
            store,
            per_iteration * (it + 1),
            policy,
            cfg.frame_stack,
            cfg.seed + it,
            cfg.progress,
            random_share=cfg.collect_random,
        )
        store.refresh()
        if cfg.readout == READOUT_FROM_STORE and readout is None:
            readout = _store_readout(store, out / READOUT_DIR, cfg.seed, cfg.progress)
        # how often this round's collection repeated its last action (near 1: the data hides the action)
        collected = action_stats(store, [e for e in store.episode_ids if e not in before])
        train = {
            "dynamics": dict(LOOP_DYNAMICS),
            "window": 6,
            "terminal_fraction": 0.1,  # as configs/train.yaml: a termination head that fires
            "reward_fraction": 0.1,  # sparse rewards: without it a short run predicts their mean everywhere
            "diffusion": dict(LOOP_DIFFUSION),
            "bank_size": cfg.bank_size,
        }
        for key, value in cfg.model.items():  # nested overrides merge: model.diffusion.motion_weight alone
            base = train.get(key)
            train[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
        train |= {
            "store": str(out / "store"),
            "out": str(model_dir),
            "steps": cfg.model_steps * (it + 1),
            "resume": (model_dir / "checkpoint" / "trainer.json").exists(),
            "device": cfg.device,
            "num_threads": cfg.num_threads,
            "seed": cfg.seed,
            "progress": cfg.progress,
        }
        if not cfg.oracle:
            train_world_model(TrainConfig(**train))
        entry = {
            "iteration": it,
            "real_frames": int(real_steps(store)),
            "collect_action_repeat": collected["repeat_share"],
            "collect_action_counts": collected["counts"],
        }
        state["history"].append(_agent_round(cfg, it, model_dir, agent_dir, readout, entry))
        atomic_write_text(state_path, json.dumps({"config": asdict(cfg), **state}, indent=2))
        print(json.dumps(state["history"][-1]))
    last = state["history"][-1]
    if len(state["history"]) == cfg.iterations and last["agent_steps"] < final_timesteps(cfg):
        # a finished loop asked for more final agent steps: train on in the last round's dream (no
        # real frames), replacing its entry; the entry it had is kept under "before"
        it = cfg.iterations - 1
        kept = ("iteration", "real_frames", "collect_action_repeat", "collect_action_counts")
        keep = {k: last[k] for k in kept if k in last}
        entry = _agent_round(cfg, it, model_dir, agent_dir, readout, keep)
        entry["before"] = {k: v for k, v in last.items() if k not in keep and k != "before"}
        state["history"][-1] = entry
        atomic_write_text(state_path, json.dumps({"config": asdict(cfg), **state}, indent=2))
        print(json.dumps(entry))
    return state


def final_timesteps(cfg: Any) -> int:
    """Dream agent steps the loop's agent has when the loop is done (``cfg``: a LoopConfig or BenchConfig)."""
    return cfg.agent_steps * cfg.iterations + cfg.final_agent_steps


def _agent_round(
    cfg: LoopConfig,
    it: int,
    model_dir: Path,
    agent_dir: Path,
    readout: Any,
    entry: dict[str, Any],
) -> dict[str, Any]:
    """Train the agent (on) in the dream of ``model_dir`` for round ``it``, score it in the world and
    check the dream against the world; returns ``entry`` with the measurements added."""
    from simworld.rollout import action_effect, policy_outcome
    from simworld.world_model import WorldModel

    agent = AgentConfig(
        world=cfg.world,
        env="oracle" if cfg.oracle else "dream",
        checkpoint=str(Path(cfg.out) / "store" if cfg.oracle else model_dir / "model"),
        bank_size=int(cfg.model.get("bank_size", cfg.bank_size)),  # the oracle's bank, as the model's
        bank_episode_starts=float(cfg.model.get("bank_episode_starts", 0.0)),
        agent=cfg.agent,
        timesteps=final_timesteps(cfg) if it == cfg.iterations - 1 else cfg.agent_steps * (it + 1),
        num_envs=cfg.num_envs,
        frame_stack=cfg.frame_stack,
        max_episode_steps=cfg.max_episode_steps,
        termination_threshold=cfg.termination_threshold,
        reward_mode=cfg.reward_mode,
        reward_contact_gap=cfg.reward_contact_gap,
        termination_floor_gap=cfg.termination_floor_gap,
        termination_readout=readout_path(cfg) if cfg.termination_bounds is not None else None,
        termination_bounds=cfg.termination_bounds,
        action_guidance=cfg.action_guidance,
        eval_every=0,
        eval_episodes=cfg.eval_episodes,
        ckpt_every=max(cfg.agent_steps // 4, 1),
        agent_kwargs=cfg.agent_kwargs,
        out=str(agent_dir),
        seed=cfg.seed,
        device=cfg.device,
        num_threads=cfg.num_threads,
        resume=(agent_dir / LAST_FILE).exists(),
        progress=cfg.progress,
    )
    result = train_agent(agent)
    real = evaluate_agent(agent_dir / LAST_FILE, cfg.world, cfg.eval_episodes, seed=cfg.seed + 50_000 + it)
    scores = {
        **entry,
        "agent_steps": result["timesteps"],
        "real_mean_return": real["mean_return"],
        "real_std_return": real["std_return"],
        "real_mean_length": real["mean_length"],
        "real_reward_per_step": real["reward_per_step"],
        # the dream's view of the same policy while it trained (horizon-truncated episodes)
        **{f"dream_{k}": v for k, v in (result.get("train") or {}).items() if k != "episodes"},
    }
    if cfg.oracle:
        return scores
    dream = WorldModel.from_pretrained(model_dir / "model", cfg.device)  # loaded once for both checks
    dream.set_sampling(action_guidance=cfg.action_guidance)  # the dream the agent trained in
    # does the dream answer the actions? (near 0: the agent cannot learn what its actions do)
    effect = action_effect(dream, starts=8, steps=10, seed=cfg.seed, readout=readout)
    # the same policy from the same real starts, dream vs world: how much the dream overrates it
    outcome = policy_outcome(
        dream,
        agent_dir / LAST_FILE,
        starts=16,
        steps=cfg.max_episode_steps,
        seed=cfg.seed,
        reward_mode=cfg.reward_mode,  # the rewards the agent trained on
        reward_contact_gap=cfg.reward_contact_gap,
        termination_floor_gap=cfg.termination_floor_gap,
        termination_readout=readout if cfg.termination_bounds is not None else None,
        termination_bounds=cfg.termination_bounds,
    )
    return {
        **scores,
        "dream_action_effect": effect["ratio"],
        **({"dream_state_effect": effect["state_ratio"]} if readout is not None else {}),
        # each of two opposite actions held from the same starts: does the dream end and pay
        # as the world does? (CartPole: pushing one way ends the real episode, not a deaf dream)
        "held_ended": effect["ended"],
        "held_return": effect["held_return"],
        "policy_return": outcome["return"],  # {"dream", "real"} over the imagination horizon
        "policy_ended": outcome["ended"],
    }
