"""Training under torchrun: two CPU processes on the gloo backend."""

import subprocess
import sys

import pytest

from simworld.world_model import WorldModel


@pytest.mark.slow
def test_torchrun_two_cpu_processes(balls_store, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "simworld.cli",
        "train",
        f"store={balls_store.root}",
        f"out={out}",
        "dynamics=tiny",
        "window=4",
        "batch_size=2",
        "steps=3",
        "bank_size=4",
        "progress=false",
        "num_threads=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DDP: 2 processes, backend gloo" in proc.stdout
    model = WorldModel.from_pretrained(out / "model")
    assert model.cfg.dynamics["size"] == "tiny"
