"""The dream: Gymnasium environments whose frames, rewards and terminations come from a world model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simworld.data.spaces import check_action_array, spec_to_space
from simworld.probes.readout import out_of_bounds, readout_bounds
from simworld.train.common import autocast
from simworld.world_model import WorldModel

OBS_MODES = ("rgb", "latent")


def load_model(checkpoint: str | Path | WorldModel | None, device: str | torch.device) -> WorldModel:
    if checkpoint is None:
        raise ValueError("the dream needs a world model: pass checkpoint=<directory> (see `simworld train`)")
    if isinstance(checkpoint, WorldModel):
        return checkpoint.to(device).eval()
    return WorldModel.from_pretrained(checkpoint, device=device)


class DreamVectorEnv(VectorEnv):
    """A batch of imagined environments stepped by one forward pass of a world model.

    The observation is the generated frame, ``uint8 (H, W, 3)`` (``obs_mode="rgb"``), or its latent,
    ``float32 (C, h, w)`` (``obs_mode="latent"``, no pixel decoding). The action space is the one the
    model was trained with. Rewards and terminations come from the model's reward model (or its
    transformer heads): an episode terminates when the predicted termination probability exceeds
    ``termination_threshold`` (or, with ``termination_threshold=None``, with that probability, drawn
    from the sub-environment's seeded generator as DIAMOND does) and is truncated after
    ``max_episode_steps`` imagined steps.

    ``reset`` starts every sub-environment from a random window of the model's start-frame bank, or
    from ``options={"frames": (t0, H, W, 3) or (num_envs, t0, H, W, 3), "actions": ...}`` (image-to-world).
    ``options={"reset_mask": bool array}`` restarts only some sub-environments. After an episode ends,
    the next ``step`` resets it and ignores its action (Gymnasium's next-step autoreset); with
    ``autoreset_mode=AutoresetMode.SAME_STEP`` the reset happens in the same step and the last frame
    is in ``info["final_obs"]``.

    ``info`` holds ``step`` (imagined steps since reset) and ``termination_prob`` per sub-environment,
    and, in a call that (re)started episodes, ``context_frames`` (masked by ``_context_frames``): the real
    frames those episodes start from, so a frame stack can begin full (``agents.sb3.ContextFrameStack``).

    Each step runs only the new frame through the transformer: past frames live in a KV cache over
    a sliding window of ``context`` frames, so cost and memory stay flat however long it runs.

    Args:
        num_envs: batch size.
        checkpoint: a ``WorldModel`` directory (``simworld train``) or a loaded ``WorldModel``.
        device: ``"cpu"``, ``"cuda"``, ...
        obs_mode: ``"rgb"`` or ``"latent"``.
        max_episode_steps: truncation horizon (None: never truncate).
        termination_threshold: probability above which the predicted termination ends an episode;
            None draws the termination from that probability instead, which keeps an unsure but
            calibrated model's terminations (p = 0.3 on a blurry frame of a ball on the floor) in
            expectation, where a threshold drops them all.
        denoising_steps: override the model's number of sampler steps per frame.
        autoreset_mode: ``NEXT_STEP`` (default) or ``SAME_STEP``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast; on CPUs with bf16 matmuls and on GPUs).
        kv_cache: False recomputes the whole context window every step instead of reading cached
            keys/values (``context`` times the work: a reference for benchmarks, not for training).
        snap_rewards: round the transformer reward head's regression to the nearest reward the
            training data holds (``model.cfg.reward_values``, recorded when the world's rewards take
            few values, e.g. Balls' 0/1/2 bounces). A regression head is never exactly 0: without
            snapping an agent can farm (or a long episode can sum up) its small bias. Models with a
            reward model are unaffected (its expected reward over the reward classes is calibrated
            and snapping would drop every unsure reward), as are models without ``reward_values``
            (continuous rewards). ``info["reward_raw"]`` keeps the raw value.
        reward_mode: how a reward model's classes pay: ``"expected"`` (the expectation: calibrated,
            but an agent can farm many unsure steps, each paying a little) or ``"likeliest"`` (the
            most probable class's reward, as DIAMOND does: only steps the model is sure of pay).
        termination_floor_gap: end an episode only where the frame before or the new one shows a
            ballistic object within this many world units of the floor
            (:func:`simworld.probes.contacts.floor_contact`): the probes' tracker checks the
            termination head, for worlds whose episodes end at the floor (Balls). Elsewhere the
            termination probability is 0; ``info["termination_prob_ungated"]`` keeps the head's.
            On held-out real Balls episodes a gap of 0.5 keeps every termination and lets 2.8 % of
            the other steps end (``simworld eval-model``). None: off.
        termination_readout: a ``simworld train-readout`` folder (or a loaded ``StateReadout``): with
            ``termination_bounds``, the readout reads the state off the frame before and the new one,
            and a step whose reading leaves the bounds ends the episode whatever the head says
            (probability 1): a probe check on the head, for worlds whose episodes end at a state
            bound (CartPole's pole angle; docs/results.md, session 22).
        termination_bounds: ``{state index: bound}``: a reading with ``|state[i]| > bound`` ends the
            episode (CartPole: ``{2: 0.2095}``, the pole angle in radians). Smaller bounds than the
            world's make the dream stricter than the world. ``info["readout_out"]`` marks the steps
            ended this way.
        action_guidance: override the model's ``DiffusionConfig.action_guidance`` (discrete actions):
            > 0 samples every frame pushed along what the taken action changes, against the mean
            over all actions, so the dream's frames answer the actions more. Costs one network pass
            per action. On CartPole (docs/results.md, session 31) 6 raised one model's pole response
            to held pushes from 0.63 to 0.93 of the world's, lowered another's, and trained no
            better agents.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | Path | WorldModel | None = None,
        device: str = "cpu",
        obs_mode: str = "rgb",
        max_episode_steps: int | None = 1000,
        termination_threshold: float | None = 0.5,
        denoising_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = "rgb_array",
        precision: str = "fp32",
        kv_cache: bool = True,
        snap_rewards: bool = True,
        reward_mode: str = "expected",
        termination_floor_gap: float | None = None,
        termination_readout: Any = None,
        termination_bounds: dict[int, float] | None = None,
        action_guidance: float | None = None,
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        self.model = load_model(checkpoint, device)
        self.model.set_sampling(action_guidance=action_guidance)  # None: the checkpoint's
        self.model.reward_mode = reward_mode  # validates it
        autocast(self.model.device, precision)  # validates it
        self.precision = precision
        self.kv_cache = bool(kv_cache)
        values = getattr(self.model.cfg, "reward_values", None)
        snap = snap_rewards and values and self.model.reward_model is None
        self.reward_values = np.asarray(values, np.float32) if snap else None
        if denoising_steps is not None:
            self.model.diffusion.steps = int(denoising_steps)
        self.num_envs = int(num_envs)
        self.obs_mode = obs_mode
        self.max_episode_steps = max_episode_steps
        self.termination_threshold = termination_threshold
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.render_mode = render_mode
        self.metadata = {
            **self.metadata,
            "autoreset_mode": self.autoreset_mode,
            "render_fps": self.model.cfg.fps,
        }
        cfg = self.model.cfg
        h, w = cfg.frame_size
        if obs_mode == "rgb":
            self.single_observation_space = spaces.Box(0, 255, (h, w, 3), np.uint8)
        else:
            shape = (self.model.latent_channels, *self.model.latent_size)
            self.single_observation_space = spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.single_action_space = spec_to_space(cfg.action_space)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.bank = getattr(self.model, "start_bank", None)
        self._state = None
        self._rngs = [np.random.default_rng() for _ in range(self.num_envs)]
        self._generator = torch.Generator(device=self.model.device)
        self._generator.seed()
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._obs = None
        self._frames = None  # last decoded frames, for render()
        self._restarted: tuple[np.ndarray, np.ndarray] | None = None
        self.termination_floor_gap, self._floor_spec = None, None
        if termination_floor_gap is not None:
            from simworld.probes.contacts import floor_spec

            self._floor_spec = floor_spec(self.model.cfg.world_id, self.model.cfg.world_params)
            if not termination_floor_gap >= 0:
                raise ValueError(
                    f"termination_floor_gap must be >= 0 world units, got {termination_floor_gap}"
                )
            self.termination_floor_gap = float(termination_floor_gap)
        self._floor = np.zeros(self.num_envs, dtype=bool)  # the last frame shows an object at the floor
        self._readout, self._bounds = readout_bounds(termination_readout, termination_bounds)

    def _at_floor(self, frames: np.ndarray) -> np.ndarray:
        from simworld.probes.contacts import floor_contact

        return floor_contact(frames, self._floor_spec, self.termination_floor_gap)

    # ---------------------------------------------------------------- helpers
    def _context(self, idx: np.ndarray, options: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Context frames/actions for sub-environments ``idx``: the user's, or random bank windows."""
        if options and options.get("frames") is not None:
            frames = np.asarray(options["frames"])
            actions = options.get("actions")
            if frames.ndim == 4:  # one context for every sub-environment
                frames = np.repeat(frames[None], len(idx), axis=0)
                if actions is not None:
                    actions = np.repeat(np.asarray(actions)[None], len(idx), axis=0)
            elif frames.shape[0] == self.num_envs:
                frames = frames[idx]
                actions = None if actions is None else np.asarray(actions)[idx]
            if frames.ndim != 5 or frames.shape[0] != len(idx) or frames.dtype != np.uint8:
                raise ValueError(
                    f"options['frames'] must be uint8 (t0, H, W, 3) or (num_envs, t0, H, W, 3), got "
                    f"{frames.dtype} {frames.shape}"
                )
            return frames, actions
        if self.bank is None:
            raise ValueError("this checkpoint has no start-frame bank: pass reset(options={'frames': ...})")
        pick = [int(self._rngs[i].integers(len(self.bank["frames"]))) for i in idx]
        return self.bank["frames"][pick], self.bank["actions"][pick]

    def _restart(self, mask: np.ndarray, options: dict | None) -> None:
        idx = np.flatnonzero(mask)
        frames, actions = self._context(idx, options)
        with autocast(self.model.device, self.precision):
            if self._state is None or mask.all():
                self._state = self.model.reset(frames, actions, generator=self._generator)
            else:
                self.model.reset(frames, actions, generator=self._generator, state=self._state, mask=mask)
        last = frames[:, -1]  # (k, H, W, 3)
        # the real frames the restarted episodes start from, for frame stacks (agents.sb3.ContextFrameStack)
        self._restarted = (idx, frames)
        self._steps[idx] = 0
        self._done[idx] = False
        if self._frames is None:
            self._frames = np.zeros((self.num_envs, *last.shape[1:]), np.uint8)
        self._frames[idx] = last
        if self._floor_spec is not None:
            self._floor[idx] = self._at_floor(last)
        if self.obs_mode == "rgb":
            obs = last
        else:
            from simworld.models.tokenizer import frames_to_tensor

            with torch.no_grad():
                obs = self.model.encode(frames_to_tensor(last[:, None], self.model.device))[:, 0]
            obs = obs.float().cpu().numpy()
        if self._obs is None:
            self._obs = np.zeros(
                (self.num_envs, *self.single_observation_space.shape), self.single_observation_space.dtype
            )
        self._obs[idx] = obs

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if isinstance(self.single_action_space, spaces.Box) and np.issubdtype(a.dtype, np.floating):
            a = a.astype(self.single_action_space.dtype)
        check_action_array(a, self.single_action_space, self.num_envs)
        return a

    def _info(self, prob: np.ndarray | None = None) -> dict[str, Any]:
        p = np.zeros(self.num_envs, np.float32) if prob is None else prob.astype(np.float32)
        return {"step": self._steps.copy(), "termination_prob": p}

    def _context_info(self, info: dict[str, Any]) -> None:
        """Add ``context_frames`` ``uint8 (num_envs, t0, H, W, 3)`` (with its ``_context_frames`` mask):
        the real frames each episode restarted in this call begins from (rgb observations only)."""
        restarted, self._restarted = self._restarted, None
        if restarted is None or self.obs_mode != "rgb":
            return
        idx, frames = restarted
        ctx = np.zeros((self.num_envs, *frames.shape[1:]), np.uint8)
        ctx[idx] = frames
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[idx] = True
        info["context_frames"], info["_context_frames"] = ctx, mask

    # ---------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            self._rngs = [np.random.default_rng(s) for s in seeds]
            self._generator.manual_seed(int(seeds[0]))
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if self._state is None and not mask.all():
                raise ValueError("the first reset must reset every sub-environment")
        self._restart(mask, options)
        info = self._info()
        self._context_info(info)
        return self._obs.copy(), info

    def step(self, actions: Any):
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._check_actions(actions)
        autoreset = self._done.copy() if self.autoreset_mode == AutoresetMode.NEXT_STEP else None
        decode = self.obs_mode == "rgb" or self.render_mode == "rgb_array" or self._floor_spec is not None
        decode = decode or self._readout is not None
        prev = self._frames
        with autocast(self.model.device, self.precision):
            frames, latents, rewards, prob = self.model.step(
                self._state, a, decode=decode, use_cache=self.kv_cache
            )
        self._steps += 1
        obs = frames if self.obs_mode == "rgb" else latents.float().cpu().numpy()
        if frames is not None:
            self._frames = frames
        self._obs = np.array(obs, copy=True)
        raw_prob = prob
        if self._floor_spec is not None:  # only a frame that shows an object at the floor may end it
            near = self._at_floor(frames)
            prob = np.where(self._floor | near, prob, 0.0).astype(np.float32)
            self._floor = near
        out = None
        if self._readout is not None:  # a reading past the bounds ends the step, whatever the head says
            out = out_of_bounds(self._readout, self._bounds, prev, frames)
            prob = np.where(out, 1.0, prob).astype(np.float32)
        if self.termination_threshold is None:
            terminated = np.array([rng.random() < p for rng, p in zip(self._rngs, prob, strict=True)])
        else:
            terminated = prob > self.termination_threshold
        truncated = (
            (self._steps >= self.max_episode_steps) if self.max_episode_steps else np.zeros_like(terminated)
        )
        truncated &= ~terminated
        rewards = rewards.astype(np.float32)
        info = self._info(prob)
        info["reward_raw"] = rewards.copy()
        if self._floor_spec is not None or out is not None:
            info["termination_prob_ungated"] = raw_prob.astype(np.float32)
        if out is not None:
            info["readout_out"] = out
        if self.reward_values is not None:
            nearest = np.abs(rewards[:, None] - self.reward_values[None]).argmin(axis=1)
            rewards = self.reward_values[nearest]
        if autoreset is not None and autoreset.any():
            # these finished last step: this step restarts them and their action is ignored
            self._restart(autoreset, None)
            rewards[autoreset], terminated[autoreset], truncated[autoreset] = 0.0, False, False
            info["step"] = self._steps.copy()
        self._done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP and self._done.any():
            info["final_obs"] = np.array(self._obs, copy=True)
            info["final_info"] = {k: v.copy() for k, v in info.items() if k != "final_obs"}
            self._restart(self._done.copy(), None)
            self._done[:] = False
        self._context_info(info)
        return self._obs.copy(), rewards, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The current frame of every sub-environment, ``uint8 (num_envs, H, W, 3)``."""
        return None if self._frames is None else self._frames.copy()


class DreamEnv(gym.Env):
    """A single imagined environment; see :class:`DreamVectorEnv` for everything it does.

    ``gymnasium.make("simworld/Dream-v0", checkpoint=DIR)`` makes one; ``gymnasium.make_vec(
    "simworld/Dream-v0", num_envs=N, vectorization_mode="vector_entry_point", checkpoint=DIR)`` makes
    a natively batched :class:`DreamVectorEnv` that runs one forward pass for all N.

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str | Path | WorldModel | None = None,
        device: str = "cpu",
        obs_mode: str = "rgb",
        termination_threshold: float | None = 0.5,
        denoising_steps: int | None = None,
        render_mode: str | None = "rgb_array",
        snap_rewards: bool = True,
        reward_mode: str = "expected",
        termination_floor_gap: float | None = None,
        termination_readout: Any = None,
        termination_bounds: dict[int, float] | None = None,
        action_guidance: float | None = None,
    ) -> None:
        self.vec = DreamVectorEnv(
            1,
            checkpoint,
            device,
            obs_mode,
            None,
            termination_threshold,
            denoising_steps,
            AutoresetMode.DISABLED,
            render_mode,
            snap_rewards=snap_rewards,
            reward_mode=reward_mode,
            termination_floor_gap=termination_floor_gap,
            termination_readout=termination_readout,
            termination_bounds=termination_bounds,
            action_guidance=action_guidance,
        )
        self.model = self.vec.model
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.model.cfg.fps}
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        seed = int(self.np_random.integers(2**31 - 1)) if seed is None else seed
        if options and options.get("frames") is not None and np.asarray(options["frames"]).ndim == 4:
            options = {**options, "frames": np.asarray(options["frames"])[None]}
            if options.get("actions") is not None:
                options["actions"] = np.asarray(options["actions"])[None]
        obs, info = self.vec.reset(seed=seed, options=options)
        self._ended = False
        return obs[0], {k: v[0] for k, v in info.items()}

    def step(self, action: Any):
        if self._ended:
            raise gym.error.ResetNeeded("the episode has ended: call reset() before step()")
        obs, r, term, trunc, info = self.vec.step(np.asarray(action)[None])
        self._ended = bool(term[0] or trunc[0])
        return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), {k: v[0] for k, v in info.items()}

    def render(self) -> np.ndarray | None:
        frames = self.vec.render()
        return None if frames is None else frames[0]
