"""Any Gymnasium environment that renders ``rgb_array``, seen through its pixels."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from simworld.imaging import resize_frames


def _cartpole_scale(env: gym.Env, frame_size: tuple[int, int]) -> np.ndarray:
    # CartPole draws world_width = 2 * x_threshold across screen_width pixels, same scale vertically.
    px_per_unit = env.screen_width / (2 * env.x_threshold)
    return np.array(
        [px_per_unit * frame_size[1] / env.screen_width, px_per_unit * frame_size[0] / env.screen_height]
    )


def _pendulum_scale(env: gym.Env, frame_size: tuple[int, int]) -> np.ndarray:
    # Pendulum draws a 4.4-unit square (bound 2.2 around the pivot) over screen_dim pixels.
    px_per_unit = env.screen_dim / 4.4
    return np.array(
        [px_per_unit * frame_size[1] / env.screen_dim, px_per_unit * frame_size[0] / env.screen_dim]
    )


def cartpole_control(state: np.ndarray) -> int:
    """CartPole's controller on its state ``(x, x_dot, theta, theta_dot)``: push the cart under the
    pole; the small cart terms keep it from drifting off the track."""
    x, x_dot, theta, theta_dot = (float(v) for v in state)
    return int(theta + 0.5 * theta_dot + 0.02 * x + 0.1 * x_dot > 0)


def _cartpole_heuristic(env: gym.Env) -> int:
    return cartpole_control(env.state)


def _pendulum_heuristic(env: gym.Env) -> np.ndarray:
    theta, theta_dot = env.state
    theta = ((theta + np.pi) % (2 * np.pi)) - np.pi  # 0 is upright
    if np.cos(theta) > 0.85:  # near the top: PD control
        u = -10.0 * theta - 2.0 * theta_dot
    else:  # pump energy towards the upright energy (E = 0 with this convention)
        energy = 0.5 * theta_dot**2 + 10.0 * (np.cos(theta) - 1.0)
        u = -2.0 * np.sign(theta_dot * energy) if theta_dot != 0 else 2.0
    return np.array([np.clip(u, -2.0, 2.0)], dtype=np.float32)


# inner env id -> (render scale in px/unit at the output size, heuristic policy on the true state)
_KNOWN = {
    "CartPole-v1": (_cartpole_scale, _cartpole_heuristic),
    "Pendulum-v1": (_pendulum_scale, _pendulum_heuristic),
}


class PixelWorld(gym.Env):
    """A Gymnasium environment observed through its rendered frames.

    Wraps any env that supports ``render_mode="rgb_array"``: the observation becomes the rendered
    frame resized (antialiased) to ``frame_size``, and the env's own observation is kept as the
    true state in ``info["state"]``.

    ## Observation space
    ``Box(0, 255, (H, W, 3), uint8)``: the rendered frame, ``frame_size=(H, W)``.

    ## Action space, rewards, episode end
    Those of the wrapped env. The registered ids ``simworld/PixelCartPole-v1`` (truncated at 500
    steps) and ``simworld/PixelPendulum-v1`` (200) follow their originals; ``simworld/Pixel-v0``
    wraps any ``env_id`` and truncates at 1000 steps unless ``max_episode_steps`` is given.

    ## True state (``info["state"]``)
    | key | shape | meaning |
    |---|---|---|
    | ``obs`` | as the wrapped env's observation | the wrapped env's own observation (float64) |
    | ``sim`` | wrapped env's ``state`` | its internal physics state, when it has one (CartPole, Pendulum) |
    | ``scale`` | ``(2,)`` | pixels per world unit along x and y at ``frame_size`` (NaN if unknown) |

    ## Arguments
    - ``env_id``: the Gymnasium id to wrap (default ``"CartPole-v1"``).
    - ``frame_size``: output ``(height, width)``, default ``(64, 64)``.
    - ``env_kwargs``: keyword arguments for the wrapped env.
    - ``render_mode``: ``"rgb_array"`` or ``None``.

    ``set_state`` restarts from a state dict (needs the wrapped env to have a settable ``state``, as
    the classic-control envs do); ``heuristic_action`` plays a simple controller for CartPole and
    Pendulum.

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        frame_size: tuple[int, int] = (64, 64),
        env_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        frame_size = tuple(int(s) for s in frame_size)
        if len(frame_size) != 2 or min(frame_size) < 8:
            raise ValueError(f"frame_size must be (height, width) with both >= 8, got {frame_size}")
        try:
            # The inner TimeLimit is dropped: truncation belongs to this env's own registration.
            self.env = gym.make(env_id, render_mode="rgb_array", **(env_kwargs or {})).unwrapped
        except gym.error.Error as e:
            raise ValueError(f"cannot make the wrapped env {env_id!r}: {e}") from e
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.frame_size = frame_size
        self.render_mode = render_mode
        self.action_space = self.env.action_space
        self.observation_space = spaces.Box(0, 255, (*frame_size, 3), np.uint8)
        self.metadata = {**self.metadata, "render_fps": self.env.metadata.get("render_fps", 30)}
        scale_fn, self._heuristic = _KNOWN.get(env_id, (None, None))
        self._scale = scale_fn(self.env, frame_size) if scale_fn else np.full(2, np.nan)
        self._inner_obs: np.ndarray | None = None
        self._frame: np.ndarray | None = None

    @property
    def world_params(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "frame_size": list(self.frame_size), "env_kwargs": self.env_kwargs}

    @property
    def fps(self) -> float:
        return float(self.metadata["render_fps"])

    def _observe(self) -> np.ndarray:
        self._frame = resize_frames(np.asarray(self.env.render(), dtype=np.uint8), self.frame_size)
        return self._frame

    def get_state(self) -> dict[str, np.ndarray]:
        state = {"obs": np.asarray(self._inner_obs, dtype=np.float64), "scale": self._scale.copy()}
        if hasattr(self.env, "state") and self.env.state is not None:
            state["sim"] = np.asarray(self.env.state, dtype=np.float64).copy()
        return state

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:  # keep the wrapped env on our seeded stream
            seed = int(self.np_random.integers(2**31 - 1))
        self._inner_obs, _ = self.env.reset(seed=seed, options=options)
        return self._observe(), {"state": self.get_state()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            if isinstance(self.action_space, spaces.Box):
                action = np.asarray(action, dtype=self.action_space.dtype)
            if not self.action_space.contains(action):
                raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        self._inner_obs, reward, terminated, truncated, _ = self.env.step(action)
        return self._observe(), float(reward), bool(terminated), bool(truncated), {"state": self.get_state()}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        return self._frame if self._frame is not None else self._observe()

    def set_state(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Restart the wrapped env from ``state["sim"]`` (its internal state) and return the frame.

        The frame equals the one the source env rendered in that state, except for decorations that
        depend on the previous action (Pendulum's torque arrow), which appear from the next step on.
        """
        if not hasattr(self.env, "state"):
            raise NotImplementedError(f"{self.env_id} has no settable `state`; set_state is not available")
        if "sim" not in state:
            raise ValueError(
                f"state for {self.env_id} needs the key 'sim' (the wrapped env's internal state)"
            )
        sim = np.asarray(state["sim"], dtype=np.float64)
        current = np.asarray(self.env.state)
        if sim.shape != current.shape:
            raise ValueError(
                f"state['sim'] must have shape {current.shape} for {self.env_id}, got {sim.shape}"
            )
        self.env.state = sim.astype(current.dtype).copy()
        if hasattr(self.env, "steps_beyond_terminated"):
            self.env.steps_beyond_terminated = None
        if hasattr(self.env, "last_u"):  # Pendulum draws the last torque; there is none after a restart
            self.env.last_u = None
        self._inner_obs = self.env._get_obs() if hasattr(self.env, "_get_obs") else np.array(self.env.state)
        return self._observe()

    def heuristic_action(self) -> Any:
        if self._heuristic is None:
            raise NotImplementedError(
                f"no heuristic policy for {self.env_id}; known: {sorted(_KNOWN)} (use policy=random)"
            )
        return self._heuristic(self.env)

    def close(self) -> None:
        self.env.close()
