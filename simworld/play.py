"""``simworld play``: drive a dream from the keyboard in a pygame window, in real time.

Arrow keys steer (Balls: left/right move the paddle; Push: arrows push the disk); number keys pick
a discrete action directly; R restarts from a new start-bank window; Esc or closing the window quits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PlayConfig:
    checkpoint: str | None = None  # None: the shipped Balls model
    scale: int = 8  # window pixels per frame pixel
    fps: float | None = None  # None: the model's frame rate
    seed: int = 0
    device: str = "cpu"
    max_steps: int | None = None  # stop after this many steps (for scripted/headless runs)


def keys_to_action(pressed: Any, space: Any, last_digit: int | None) -> Any:
    """Map the pressed keys to an action of ``space`` (Discrete: arrows for 3 actions, else digits)."""
    import pygame
    from gymnasium import spaces

    left, right = pressed[pygame.K_LEFT], pressed[pygame.K_RIGHT]
    up, down = pressed[pygame.K_UP], pressed[pygame.K_DOWN]
    if isinstance(space, spaces.Discrete):
        if last_digit is not None and last_digit < space.n:
            return space.start + last_digit
        if space.n == 3:  # left / stay / right, as Balls-v0
            return space.start + (0 if left and not right else 2 if right and not left else 1)
        return space.start
    action = np.zeros(space.shape, dtype=space.dtype)
    if action.size >= 2:
        action.flat[0] = float(right) - float(left)
        action.flat[1] = float(up) - float(down)
    return np.clip(action, space.low, space.high)


def play(cfg: PlayConfig) -> dict[str, Any]:
    import pygame

    from envs.dream import DreamEnv
    from simworld.dream import shipped_checkpoint

    env = DreamEnv(cfg.checkpoint or shipped_checkpoint(), device=cfg.device)
    fps = cfg.fps or env.model.cfg.fps
    obs, _ = env.reset(seed=cfg.seed)
    h, w = obs.shape[:2]
    pygame.init()
    screen = pygame.display.set_mode((w * cfg.scale, h * cfg.scale))
    pygame.display.set_caption("simworld dream — arrows to act, R to restart, Esc to quit")
    clock = pygame.time.Clock()
    steps, episodes, total_reward, digit, running = 0, 1, 0.0, None, True
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                obs, _ = env.reset()
                episodes += 1
            elif event.type == pygame.KEYDOWN and pygame.K_0 <= event.key <= pygame.K_9:
                digit = event.key - pygame.K_0
            elif event.type == pygame.KEYUP and pygame.K_0 <= event.key <= pygame.K_9:
                digit = None
        if not running:
            break
        action = keys_to_action(pygame.key.get_pressed(), env.action_space, digit)
        obs, reward, terminated, truncated, _ = env.step(action)
        total_reward += reward
        steps += 1
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(obs.swapaxes(0, 1)))
        screen.blit(pygame.transform.scale(surface, screen.get_size()), (0, 0))
        pygame.display.flip()
        if terminated or truncated:
            obs, _ = env.reset()
            episodes += 1
        if cfg.max_steps is not None and steps >= cfg.max_steps:
            break
        clock.tick(fps)
    pygame.quit()
    result = {"steps": steps, "episodes": episodes, "reward": total_reward}
    print(f"played {steps} steps over {episodes} episode(s), reward {total_reward:.1f}")
    return result
