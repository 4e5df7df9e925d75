import os

import numpy as np
import pygame
from gymnasium import spaces

from simworld.play import PlayConfig, keys_to_action, play


class Keys(dict):
    def __getitem__(self, key):
        return self.get(key, False)


def test_keys_map_to_actions():
    balls = spaces.Discrete(3)
    assert keys_to_action(Keys({pygame.K_LEFT: True}), balls, None) == 0
    assert keys_to_action(Keys(), balls, None) == 1
    assert keys_to_action(Keys({pygame.K_RIGHT: True}), balls, None) == 2
    assert keys_to_action(Keys(), spaces.Discrete(5), 4) == 4
    push = spaces.Box(-1, 1, (2,), np.float32)
    np.testing.assert_array_equal(
        keys_to_action(Keys({pygame.K_RIGHT: True, pygame.K_UP: True}), push, None), [1.0, 1.0]
    )


def test_play_runs_headless(checkpoint, monkeypatch):
    monkeypatch.setitem(os.environ, "SDL_VIDEODRIVER", "dummy")
    result = play(PlayConfig(checkpoint=str(checkpoint), max_steps=5, fps=1000))
    assert result["steps"] == 5
