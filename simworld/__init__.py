"""simworld: a Sora-style video world model behind the Gymnasium API.

``import simworld`` registers every environment id under the ``simworld/`` namespace, so
``gymnasium.make("simworld/Balls-v0")`` works without importing ``envs`` yourself.
"""

from simworld.registration import WORLD_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["WORLD_IDS", "__version__", "register_envs"]
