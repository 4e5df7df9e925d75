"""Train stable-baselines3 agents in the dream (or the real world) and evaluate them in the real world.

``simworld agent train`` builds the training environment — the batched dream of a world model
(``env=dream``) or copies of the ground-truth world (``env=real``, the baseline) — with the same
pixel preprocessing as the real-world evaluation environment (``frame_stack`` RGB frames, channels
first for SB3's CNN policy). While it learns, an ``EvalCallback`` scores the policy in the real
world every ``eval_every`` agent steps; TensorBoard gets the dream's episode returns
(``rollout/ep_rew_mean``) beside the real ones (``eval/mean_reward``), which is where a policy that
exploits a model error shows itself: high dream return, low real return.

Runs checkpoint every ``ckpt_every`` steps (SB3 zip, written atomically, plus ``agent.json``) and
``resume=true`` continues from the last one, with the saved ``agent_kwargs`` updated by any given
(a lower learning rate for a last stage, say; the network stays). Replay buffers (DQN, SAC) are not
checkpointed: a resumed off-policy run refills its buffer.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecTransposeImage

import simworld
from simworld.checkpoint import atomic_write_text
from simworld.data.atomic import atomic_path
from simworld.probes.readout import readout_policy_folder
from simworld.world_model import REWARD_MODES
from simworld.worlds import WorldConfig, make_world

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}
ENVS = ("dream", "real", "oracle")
AGENT_FILE, LAST_FILE, BEST_FILE = "agent.json", "last.zip", "best_model.zip"
# policies shipped in the package: simworld/assets/policies/<name>/{policy.zip, agent.json}
POLICY_ASSETS = Path(simworld.__file__).parent / "assets" / "policies"
SHIPPED_PREFIX, SHIPPED_FILE = "shipped:", "policy.zip"
# what a policy zip carries for training only: the last rollout's observations and episode stats
TRAINING_ONLY = [
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
    "ep_info_buffer",
    "ep_success_buffer",
]


@dataclass
class AgentConfig:
    """Everything :func:`train_agent` needs.

    Attributes:
        world: The ground-truth world (:class:`WorldConfig` fields): where the agent is evaluated,
            and where it trains when ``env="real"``.
        env: ``"dream"`` (train in the world model), ``"real"`` (train in the world itself) or
            ``"oracle"`` (the dream's protocol on the real world, a perfect world model:
            ``envs.oracle``): episodes restart the real world from the true states of
            ``checkpoint``'s start bank and are truncated at ``max_episode_steps``, so what an agent
            cannot learn here no world model would teach it under the same horizon and starts.
        checkpoint: World-model directory for the dream; None: the shipped model (Balls only). For
            the oracle: a world-model directory (its start bank) or an episode store (a bank of
            ``bank_size`` windows, a share ``bank_episode_starts`` at episode starts, drawn from it).
        agent: SB3 algorithm: ``ppo`` (default), ``a2c``, ``dqn`` (discrete actions), ``sac`` (continuous).
        timesteps: Agent steps to train (summed over ``num_envs``).
        num_envs: Parallel environments (the dream runs them as one batch).
        frame_stack: Frames the policy sees (motion is not visible in one frame).
        max_episode_steps: Dream episodes are truncated here (real ones at the world's limit).
        termination_threshold: Termination probability that ends a dream episode; a head trained on
            rare terminations fires rarely, so calibrate it (``simworld eval-model`` reports the best F1
            threshold on real frames). None: each dream step terminates with the predicted probability.
        reward_mode: How the dream's reward model pays (``envs.dream.DreamVectorEnv``): ``"expected"``
            or ``"likeliest"`` (only transitions the model is sure of, as DIAMOND's argmax).
        reward_contact_gap: Pay a dream reward only where its frames show an object within this many
            world units of the agent's body (``envs.probe_wrapper.ContactRewardVectorWrapper``: the
            probes' tracker checks the reward model; worlds whose rewards are contacts, e.g. Balls'
            bounces). None: off.
        termination_floor_gap: End a dream episode only where its frames show a falling object
            within this many world units of the floor (``envs.dream.DreamVectorEnv``: the tracker
            checks the termination head, for worlds that end at the floor, e.g. Balls). None: off.
        termination_readout: A ``simworld train-readout`` folder; with ``termination_bounds``
            (``{state index: bound}``) a dream step whose frames read past a bound ends its episode
            (``envs.dream.DreamVectorEnv``: the readout checks the termination head; CartPole's
            pole angle is index 2, the world ends past 0.2095 rad). None: off.
        action_guidance: The dream's action guidance (``envs.dream.DreamVectorEnv``; discrete
            actions): > 0 makes the dream answer the actions more. None: the checkpoint's (0).
        bank_size: The oracle's bank size when ``checkpoint`` is an episode store (the loop's: 1024).
        bank_episode_starts: The share of that bank's windows that begin an episode.
        oracle_state_noise: ``{state index: std}``: the oracle's true state gets a Gaussian kick
            before every step (``envs.oracle.StateNoise``), a perfect model with random errors of
            that size (CartPole: ``{3: 0.25}``, the pole's angular velocity). None: off.
        eval_every: Agent steps between real-world evaluations (0: none).
        eval_episodes: Real episodes per evaluation.
        ckpt_every: Agent steps between checkpoints.
        agent_kwargs: Extra SB3 constructor arguments (e.g. ``{"n_steps": 128}``). On resume, those
            given replace the saved run's from then on (``policy_kwargs`` may not change).
        out: Run directory.
        resume: Continue from ``<out>/last.zip``; without it an existing run is an error.
    """

    world: dict[str, Any] = field(default_factory=lambda: asdict(WorldConfig()))
    env: str = "dream"
    checkpoint: str | None = None
    agent: str = "ppo"
    timesteps: int = 100_000
    num_envs: int = 8
    frame_stack: int = 4
    max_episode_steps: int = 1000
    termination_threshold: float | None = 0.5
    reward_mode: str = "expected"
    reward_contact_gap: float | None = None
    termination_floor_gap: float | None = None
    termination_readout: str | None = None
    termination_bounds: dict[int, float] | None = None
    action_guidance: float | None = None
    bank_size: int = 1024
    bank_episode_starts: float = 0.5
    oracle_state_noise: dict[int, float] | None = None
    eval_every: int = 10_000
    eval_episodes: int = 5
    ckpt_every: int = 10_000
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/agent"
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise ValueError(f"env must be one of {ENVS}, got {self.env!r}")
        if self.agent not in ALGOS:
            raise ValueError(f"unknown agent {self.agent!r}; choose one of {sorted(ALGOS)}")
        if self.frame_stack < 1 or self.num_envs < 1:
            raise ValueError("frame_stack and num_envs must be >= 1")
        check_dream_rewards(self.reward_mode, self.reward_contact_gap, self.termination_floor_gap)
        if self.oracle_state_noise is not None and self.env != "oracle":
            raise ValueError(f"oracle_state_noise kicks the oracle's true state; env={self.env!r} has none")


def newest_frame(obs: np.ndarray) -> np.ndarray:
    """The newest RGB frame ``(H, W, 3)`` of a stacked, channels-first observation ``(1, 3k, H, W)``."""
    return np.ascontiguousarray(obs[0, -3:].transpose(1, 2, 0))


def preprocess(venv: VecEnv, frame_stack: int) -> VecEnv:
    """The observation pipeline every policy sees, dream or real: stacked RGB frames, channels first.

    Dream episodes start with their real context frames already in the stack (``ContextFrameStack``).
    """
    from agents.sb3 import ContextFrameStack

    return VecTransposeImage(ContextFrameStack(venv, frame_stack))


def real_venv(world: dict[str, Any], num_envs: int, seed: int, frame_stack: int, eyes: Any = None) -> VecEnv:
    """``num_envs`` copies of the ground-truth world (SB3 ``DummyVecEnv`` with ``Monitor``); with
    ``eyes`` (a world model or its directory) the policy sees that model's one-step predictions of
    the world's frames instead of the frames (``envs.model_eyes.ModelEyes``)."""
    if eyes is None:
        return preprocess(make_vec_env(lambda: make_world(world), n_envs=num_envs, seed=seed), frame_stack)
    from envs.model_eyes import ModelEyes
    from simworld.world_model import WorldModel

    model = eyes if isinstance(eyes, WorldModel) else WorldModel.from_pretrained(eyes)
    venv = make_vec_env(lambda: ModelEyes(make_world(world), model, seed), n_envs=num_envs, seed=seed)
    return preprocess(venv, frame_stack)


def check_dream_rewards(
    reward_mode: str, reward_contact_gap: float | None, termination_floor_gap: float | None = None
) -> None:
    """Raise a clear error for dream reward and termination settings no dream accepts (before any work)."""
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if reward_contact_gap is not None and not reward_contact_gap >= 0:
        raise ValueError(f"reward_contact_gap must be >= 0 world units (null: off), got {reward_contact_gap}")
    if termination_floor_gap is not None and not termination_floor_gap >= 0:
        raise ValueError(
            f"termination_floor_gap must be >= 0 world units (null: off), got {termination_floor_gap}"
        )


def dream_venv(cfg: AgentConfig) -> VecEnv:
    """The batched dream of ``cfg.checkpoint`` as an SB3 ``VecEnv`` (same-step autoreset)."""
    from gymnasium.vector import AutoresetMode

    from agents.sb3 import SB3VecEnv
    from envs.dream import DreamVectorEnv
    from simworld.dream import shipped_checkpoint

    ckpt = cfg.checkpoint or shipped_checkpoint()
    dream = DreamVectorEnv(
        cfg.num_envs,
        ckpt,
        device=cfg.device,
        max_episode_steps=cfg.max_episode_steps,
        termination_threshold=cfg.termination_threshold,
        reward_mode=cfg.reward_mode,
        termination_floor_gap=cfg.termination_floor_gap,
        termination_readout=cfg.termination_readout,
        termination_bounds=cfg.termination_bounds,
        action_guidance=cfg.action_guidance,
        autoreset_mode=AutoresetMode.SAME_STEP,
        render_mode=None,
    )
    real = make_world(cfg.world)
    if dream.single_action_space != real.action_space:
        raise ValueError(
            f"the world model's action space {dream.single_action_space} is not the world's "
            f"{real.action_space}: pass the checkpoint trained on {cfg.world.get('id')}"
        )
    if dream.single_observation_space.shape != real.observation_space.shape:
        raise ValueError(
            f"the world model makes {dream.single_observation_space.shape} frames, the world "
            f"{real.observation_space.shape}"
        )
    real.close()
    if cfg.reward_contact_gap is not None:
        from envs.probe_wrapper import ContactRewardVectorWrapper

        dream = ContactRewardVectorWrapper(dream, max_gap=cfg.reward_contact_gap)
    venv = SB3VecEnv(dream)
    venv.seed(cfg.seed)
    return preprocess(VecMonitor(venv), cfg.frame_stack)


def oracle_venv(cfg: AgentConfig) -> VecEnv:
    """The oracle dream (``envs.oracle``) as an SB3 ``VecEnv``, with the dream's preprocessing."""
    from agents.sb3 import SB3VecEnv
    from envs.oracle import load_bank, oracle_vector_env
    from simworld.dream import shipped_checkpoint

    bank = load_bank(
        cfg.checkpoint or shipped_checkpoint(),
        size=cfg.bank_size,
        episode_starts=cfg.bank_episode_starts,
        seed=cfg.seed,
    )
    venv = SB3VecEnv(
        oracle_vector_env(
            cfg.world, bank, cfg.num_envs, cfg.max_episode_steps, state_noise=cfg.oracle_state_noise
        )
    )
    venv.seed(cfg.seed)
    return preprocess(VecMonitor(venv), cfg.frame_stack)


class AtomicCheckpoint(BaseCallback):
    """Saves ``<out>/last.zip`` every ``every`` agent steps (temp file + rename: never half-written)."""

    def __init__(self, out: Path, every: int) -> None:
        super().__init__()
        self.out, self.every, self._last = out, every, 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            save_agent(self.model, self.out / LAST_FILE)
        return True


def save_agent(model: BaseAlgorithm, path: Path) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)


def _relative(path: str) -> str:
    """``path`` relative to the working directory where it lies below it (else as given)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def export_policy(policy: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a policy for shipping: ``<out>/policy.zip`` and ``<out>/agent.json``.

    The zip keeps the network's weights but not what only training uses: the optimiser's moment
    estimates (two more copies of the weights; a fresh optimiser takes their place) and the last
    rollout's observations. So it is about a third the size and predicts exactly as the source;
    training it further restarts the optimiser. ``agent.json`` is the source's, plus where it came from.
    """
    src = policy_file(policy)
    model, meta = load_policy(src)
    opt = model.policy.optimizer
    model.policy.optimizer = type(opt)(model.policy.parameters(), **opt.defaults)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SHIPPED_FILE
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp, exclude=TRAINING_ONLY)
    meta = {**meta, "exported_from": str(src)}
    for key in ("checkpoint", "out"):  # provenance, not needed to run: no machine's absolute paths
        if meta.get(key):
            meta[key] = _relative(meta[key])
    atomic_write_text(out / AGENT_FILE, json.dumps(meta, indent=2))
    return path


def resumed_agent_kwargs(cfg: AgentConfig, last: Path) -> dict[str, Any]:
    """The SB3 arguments a resumed run goes on with: the saved run's, updated by ``cfg.agent_kwargs``.

    A changed value (a lower ``learning_rate``, larger ``n_steps``) applies from the resume on and is
    logged; the network (``policy_kwargs``) is fixed by the checkpoint, and an argument the algorithm
    does not take is an error, as it is for a fresh run.
    """
    saved, run = policy_meta(last).get("agent_kwargs", {}), last.parent
    given = dict(cfg.agent_kwargs)
    accepted = set(inspect.signature(ALGOS[cfg.agent].__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(f"agent_kwargs: {cfg.agent} takes no {unknown} (resuming {run})")
    built = saved.get("policy_kwargs")  # None: SB3's default network
    if "policy_kwargs" in given and given["policy_kwargs"] != built:
        raise ValueError(
            f"agent_kwargs.policy_kwargs cannot change on resume: {run} holds a network built "
            f"with {built or 'the defaults'}; train a new run (another out=) for {given['policy_kwargs']}"
        )
    changed = {k: (saved[k], v) for k, v in given.items() if k in saved and saved[k] != v}
    added = {k: v for k, v in given.items() if k not in saved}
    if changed or added:
        parts = [f"{k} {a} -> {b}" for k, (a, b) in changed.items()] + [
            f"{k} = {v}" for k, v in added.items()
        ]
        print(f"resuming {run} with agent_kwargs {', '.join(parts)}")
    return {**saved, **given}


def train_agent(cfg: AgentConfig | dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) an agent; returns the final real-world evaluation and the run's paths."""
    if isinstance(cfg, dict):
        cfg = AgentConfig(**cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    last = out / LAST_FILE
    if last.exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds an agent run: pass resume=true or another out=")
    out.mkdir(parents=True, exist_ok=True)
    resuming = cfg.resume and last.exists()
    if resuming:  # the saved run's hyperparameters, updated by those given now
        cfg = replace(cfg, agent_kwargs=resumed_agent_kwargs(cfg, last))
    atomic_write_text(out / AGENT_FILE, json.dumps(asdict(cfg), indent=2))

    if cfg.env == "dream":
        venv = dream_venv(cfg)
    elif cfg.env == "oracle":
        venv = oracle_venv(cfg)
    else:
        venv = real_venv(cfg.world, cfg.num_envs, cfg.seed, cfg.frame_stack)
    algo = ALGOS[cfg.agent]
    if resuming:
        model = algo.load(last, env=venv, device=cfg.device, **cfg.agent_kwargs)
        model.tensorboard_log = str(out / "tb")  # the zip holds the path it was saved with, maybe elsewhere
    else:
        kwargs = {
            "tensorboard_log": str(out / "tb"),
            "seed": cfg.seed,
            "device": cfg.device,
            **cfg.agent_kwargs,
        }
        if cfg.agent == "dqn":
            kwargs.setdefault("buffer_size", 10_000)  # obs + next obs of 4x64x64x3 uint8: ~1 GB at 10k
        model = algo("CnnPolicy", venv, verbose=0, **kwargs)
    callbacks: list[BaseCallback] = [AtomicCheckpoint(out, cfg.ckpt_every)]
    eval_env = None
    if cfg.eval_every:
        eval_env = real_venv(cfg.world, 1, cfg.seed + 10_000, cfg.frame_stack)
        callbacks.append(
            EvalCallback(
                eval_env,
                n_eval_episodes=cfg.eval_episodes,
                eval_freq=max(cfg.eval_every // cfg.num_envs, 1),
                best_model_save_path=str(out),
                log_path=str(out / "eval"),
                verbose=0,
            )
        )
    remaining = cfg.timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(
            remaining,
            callback=CallbackList(callbacks),
            reset_num_timesteps=False,
            tb_log_name=cfg.env,
            progress_bar=_progress_bar_available() and cfg.progress,
        )
    save_agent(model, last)
    train_stats = episode_stats(model)
    venv.close()
    if eval_env is not None:
        eval_env.close()
    result = evaluate_agent(
        last, cfg.world, episodes=cfg.eval_episodes, seed=cfg.seed + 20_000, frame_stack=cfg.frame_stack
    )
    result.update({"timesteps": int(model.num_timesteps), "policy": str(last), "env": cfg.env})
    if train_stats:
        result["train"] = train_stats  # the training env's own view: the dream's, for env=dream
    atomic_write_text(out / "result.json", json.dumps(result, indent=2))
    return result


def episode_stats(model: BaseAlgorithm) -> dict[str, float] | None:
    """Return, length and reward per step of the last (up to 100) training episodes SB3 logged.

    In the dream these are the model's rewards; set beside the real world's they show exploitation
    (a dream paying more per step than the world does)."""
    eps = list(model.ep_info_buffer or [])
    if not eps:
        return None
    r, n = np.array([e["r"] for e in eps], float), np.array([e["l"] for e in eps], float)
    return {
        "episodes": len(eps),
        "mean_return": float(r.mean()),
        "mean_length": float(n.mean()),
        "reward_per_step": float(r.sum() / max(n.sum(), 1.0)),
    }


def _progress_bar_available() -> bool:
    try:  # SB3's progress bar needs tqdm and rich
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def shipped_policies() -> list[str]:
    """Names of the policies shipped inside the package (``policy=shipped:<name>``)."""
    return sorted(p.parent.name for p in POLICY_ASSETS.glob(f"*/{SHIPPED_FILE}"))


def policy_file(spec: str | os.PathLike) -> Path:
    """The zip a policy argument names: a path, or ``shipped:<name>`` for a policy in the package."""
    spec = str(spec)
    if spec.startswith(SHIPPED_PREFIX):
        name = spec[len(SHIPPED_PREFIX) :]
        path = POLICY_ASSETS / name / SHIPPED_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no shipped policy {name!r}; shipped: {', '.join(shipped_policies()) or 'none'}"
            )
        return path
    return Path(spec)


def policy_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``agent.json`` beside a policy zip (or ``shipped:<name>``): how it was trained; {} if none."""
    meta_path = policy_file(path).parent / AGENT_FILE
    return json.loads(meta_path.read_text()) if meta_path.exists() else {}


def load_policy(path: str | os.PathLike, device: str = "cpu") -> tuple[BaseAlgorithm, dict[str, Any]]:
    """An SB3 zip (or ``shipped:<name>``) and the ``agent.json`` beside it (algorithm, frame stack,
    world)."""
    path = policy_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no policy at {path}")
    meta = policy_meta(path)
    name = meta.get("agent", "ppo")
    if name not in ALGOS:
        raise ValueError(f"{path.parent / AGENT_FILE} names an unknown agent {name!r}")
    return ALGOS[name].load(path, device=device), meta


class FramePolicy:
    """A trained agent as a function of the newest frame: ``policy(frame (H, W, 3) uint8) -> action``.

    Keeps the last ``frame_stack`` frames itself (zeros before the first, as SB3's ``VecFrameStack``
    does after a reset), so a policy trained on stacked observations runs wherever a plain
    frame-to-action callable is expected (``simworld rollout actions=policy.zip``). Call
    :meth:`reset` when an episode restarts.
    """

    def __init__(self, path: str | os.PathLike, deterministic: bool = True) -> None:
        self.model, meta = load_policy(path)
        self.frame_stack = int(meta.get("frame_stack", 4))
        channels = self.model.observation_space.shape[0]
        if channels != 3 * self.frame_stack:
            raise ValueError(
                f"{path}: the policy sees {channels} channels, not {self.frame_stack} stacked RGB frames"
            )
        self.deterministic = deterministic
        self._stack: np.ndarray | None = None

    def reset(self, context: np.ndarray | None = None) -> None:
        """Start a new episode; ``context`` ``(t, H, W, 3)``: frames seen before the first call (a
        dream's start window but its last frame), stacked as ``ContextFrameStack`` stacks them."""
        self._stack = None
        if context is not None and len(context):
            ctx = np.asarray(context, np.uint8)[-self.frame_stack :].transpose(0, 3, 1, 2)  # (k, 3, H, W)
            self._stack = np.zeros((3 * self.frame_stack, *ctx.shape[2:]), np.uint8)
            self._stack[3 * (self.frame_stack - len(ctx)) :] = ctx.reshape(-1, *ctx.shape[2:])

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)
        if self._stack is None:
            self._stack = np.zeros((3 * self.frame_stack, *frame.shape[1:]), np.uint8)
        self._stack = np.concatenate([self._stack[3:], frame])
        action, _ = self.model.predict(self._stack[None], deterministic=self.deterministic)
        return action[0]


def evaluate_agent(
    policy: str | os.PathLike | BaseAlgorithm,
    world: dict[str, Any] | None = None,
    episodes: int = 10,
    seed: int = 0,
    frame_stack: int | None = None,
    deterministic: bool = True,
    video: str | None = None,
    eyes: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Real-world returns of a policy (an SB3 zip or model, ``"random"`` or ``"readout:<folder>"``):
    mean, std and each episode's; optionally an mp4 of episode 1 (of what the policy saw). With
    ``eyes`` (a world-model directory) the world runs as usual but the policy sees the model's
    one-step prediction of each frame (``envs.model_eyes.ModelEyes``): the visual gap, alone.
    Where the world reports its true state (``info["state"]``, as ours do), ``final_states`` holds
    each episode's last one: what ended it (a CartPole pole past 0.21 rad, or its cart past 2.4)."""
    meta: dict[str, Any] = {}
    if policy == "random":  # the floor every trained policy is compared with
        policy = None
    elif (folder := readout_policy_folder(policy)) is not None:  # a frame-only yardstick controller
        from simworld.probes.readout import ReadoutController, readout_world

        world = world or readout_world(folder)  # by default, the world the readout learnt to read
        policy = ReadoutController(folder, world["id"])
    elif not isinstance(policy, BaseAlgorithm):
        policy, meta = load_policy(policy)
    world = world or meta.get("world") or asdict(WorldConfig())
    frame_stack = frame_stack or meta.get("frame_stack", 4)
    venv = real_venv(world, 1, seed, frame_stack, eyes)
    venv.action_space.seed(seed)
    returns, lengths, frames, ends = [], [], [], []
    obs = venv.reset()
    ret, length = 0.0, 0
    while len(returns) < episodes:
        if video and not returns:
            frames.append(newest_frame(obs))
        if policy is None:
            action = np.array([venv.action_space.sample()])
        else:
            action, _ = policy.predict(obs, deterministic=deterministic)
        obs, reward, done, infos = venv.step(action)
        ret += float(reward[0])
        length += 1
        if done[0]:
            returns.append(ret)
            lengths.append(length)
            if isinstance(state := infos[0].get("state"), dict):  # the world's true state as it ended
                ends.append({k: np.asarray(v).tolist() for k, v in state.items()})
            ret, length = 0.0, 0
    venv.close()
    result = {
        "world": world.get("id"),
        "episodes": episodes,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": returns,
        "mean_length": float(np.mean(lengths)),
        "reward_per_step": float(np.sum(returns) / max(np.sum(lengths), 1)),
    }
    if len(ends) == episodes:  # why episodes ended: e.g. CartPole's obs [x, x_dot, theta, theta_dot]
        result["final_states"] = ends
    if eyes is not None:
        result["eyes"] = str(eyes)
    if video:
        from simworld.data.video import write_video

        write_video(video, np.stack(frames), fps=15)
        result["video"] = str(video)
    return result
