"""The ``simworld`` command: ``simworld <command> [hydra overrides...]``.

Each command is configured by Hydra from the packaged ``configs/`` folder (``configs/<command>.yaml``
plus groups such as ``world/``), so ``simworld collect world=push episodes=50 workers=4`` and
``simworld collect --cfg job`` work as Hydra users expect.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# command -> (module:function taking the composed DictConfig, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dream": (
        "simworld.commands:dream",
        "the shipped model dreams beside the real world: dream.mp4 + summary",
    ),
    "rollout": ("simworld.commands:rollout", "imagine a trajectory from actions or a policy: npz + mp4"),
    "collect": (
        "simworld.commands:collect",
        "collect episodes from a world into an episode store (+ preview mp4)",
    ),
    "export": ("simworld.commands:export", "write one stored episode as an mp4"),
    "import": ("simworld.commands:import_", "add a video file + actions file to a store as an episode"),
    "train-tokenizer": (
        "simworld.commands:train_tokenizer",
        "train the video compression network (VAE) on a store",
    ),
    "train": ("simworld.commands:train", "train the world model's dynamics on a store (resumable)"),
    "train-readout": (
        "simworld.commands:train_readout",
        "learn to read a world's true state off its frames (for per-state probes such as dream action_effect)",
    ),
    "motion-check": (
        "simworld.commands:motion_check",
        "can a dynamics recipe learn a square at constant velocity? next-frame MSE vs copying, per step",
    ),
    "eval-model": ("simworld.commands:eval_model", "open-loop PSNR/SSIM, reward and termination scores"),
    "play": ("simworld.commands:play", "drive a dream from the keyboard in a pygame window"),
    "probe": (
        "simworld.probes.cli:probe",
        "physics probes on a checkpoint's dreams (ID/OOD) or a video + sidecar: JSON + HTML",
    ),
    "export-model": (
        "simworld.commands:export_model",
        "copy a world model, e.g. with fp16 weights for shipping",
    ),
    "info": ("simworld.commands:info", "summarise an episode store"),
    "agent train": (
        "simworld.commands:agent_train",
        "train an SB3 agent in the dream (env=dream) or the real world (env=real); evaluated in the real one",
    ),
    "agent loop": (
        "simworld.commands:agent_loop",
        "the world-model loop under a real-frame budget: collect -> update model -> train agent in the dream",
    ),
    "agent eval": (
        "simworld.commands:agent_eval",
        "real-world returns (mean +- std) and a video of a policy",
    ),
    "agent export": (
        "simworld.commands:agent_export",
        "a trained policy without its optimiser state, for shipping (`policy=shipped:<name>` runs it)",
    ),
    "agent bench": (
        "simworld.commands:agent_bench",
        "dream-trained vs real-trained agents at one real-frame budget, over seeds: table and curves",
    ),
    "bench": (
        "simworld.commands:bench",
        "benchmark the dream (steps/s, latency, FLOP/s, memory), training and data (`--quick`: <1 min)",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: simworld <command> [key=value ...] [hydra flags]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()),
        "",
        "Arguments are Hydra overrides, e.g. `simworld collect world=push episodes=50`.",
        "`simworld <command> --help` shows a command's options; `--cfg job` prints its config.",
    ]
    return "\n".join(lines)


def _resolve(target: str) -> Callable:
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simworld`` console script."""
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "agent":  # two-word commands
        subs = [c.split()[1] for c in COMMANDS if c.startswith("agent ")]
        if not rest or rest[0] not in subs:
            print(f"simworld agent: choose one of {', '.join(subs)}\n\n{_usage()}", file=sys.stderr)
            return 2
        command, rest = f"agent {rest[0]}", rest[1:]
    rest = ["quick=true" if a == "--quick" else a for a in rest]  # the one flag spelled like a flag
    if command not in COMMANDS:
        print(f"simworld: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    fn = _resolve(COMMANDS[command][0])
    result: dict = {}

    def task(cfg) -> None:
        result["value"] = fn(cfg)

    # Hydra reads sys.argv; hand it only this command's overrides.
    saved = sys.argv
    sys.argv = [f"simworld {command}", *rest]
    try:
        config = command.replace(" ", "-")  # "agent train" -> configs/agent-train.yaml
        hydra.main(version_base=None, config_path="pkg://configs", config_name=config)(task)()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
