"""End-to-end runs of the ``simworld`` command, as a user types it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from simworld.data.store import EpisodeStore
from simworld.data.video import read_video


def simworld(*args: str, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("simworld")
    cmd = [exe] if exe else [sys.executable, "-m", "simworld.cli"]
    proc = subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"simworld {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_lists_the_commands():
    out = simworld("--help").stdout
    for command in ("collect", "export", "import", "info", "bench"):
        assert command in out


def test_unknown_command_fails_with_usage():
    proc = simworld("dance", check=False)
    assert proc.returncode != 0
    assert "unknown command" in proc.stderr and "collect" in proc.stderr


def test_collect_then_info_and_export(tmp_path):
    out = tmp_path / "balls"
    proc = simworld(
        "collect", "world=balls", "episodes=3", "workers=2", "max_steps=25", f"out={out}", "progress=false"
    )
    assert "collected 3 episodes" in proc.stdout
    store = EpisodeStore(out)
    assert len(store) == 3
    assert all(store.lengths[e] <= 25 for e in store.episode_ids)
    frames, _ = read_video(out / "preview.mp4")
    assert frames.shape[0] == store.lengths[store.episode_ids[0]] + 1
    assert frames.shape[1:] == (256, 256, 3)  # 64x64 upscaled 4x

    info = json.loads(simworld("info", f"store={out}").stdout)
    assert info["episodes"] == 3 and info["world_id"] == "simworld/Balls-v0"
    assert sum(info["action_counts"]) == info["steps"] and 0 <= info["action_repeat_share"] <= 1

    mp4 = tmp_path / "ep1.mp4"
    simworld("export", f"store={out}", "episode=1", f"out={mp4}", "upscale=1")
    frames, _ = read_video(mp4)
    assert frames.shape == store.load(1).frames.shape


def test_hydra_overrides_reach_the_world(tmp_path):
    out = tmp_path / "push"
    simworld(
        "collect",
        "world=push",
        "episodes=1",
        "workers=1",
        "max_steps=5",
        "policy=random",
        "world.kwargs.frame_size=[32,48]",
        f"out={out}",
        "video=false",
        "progress=false",
    )
    store = EpisodeStore(out)
    assert store.meta.frame_size == (32, 48)
    assert store.load(0).frames.shape == (6, 32, 48, 3)
    assert not (out / "preview.mp4").exists()


def test_collect_bad_inputs_are_named(tmp_path):
    proc = simworld("collect", "world.id=simworld/Nope-v0", f"out={tmp_path / 'x'}", check=False)
    assert proc.returncode != 0 and "unknown world" in proc.stderr + proc.stdout
    proc = simworld("collect", "policy=clever", f"out={tmp_path / 'y'}", check=False)
    assert proc.returncode != 0 and "unknown policy" in proc.stderr + proc.stdout


def test_import_a_user_video(tmp_path):
    from simworld.data.video import write_video

    rng = np.random.default_rng(0)
    frames = np.zeros((9, 64, 64, 3), np.uint8)
    for t in range(9):
        frames[t, 10 + 3 * t : 20 + 3 * t, 20:30] = (230, 60, 60)
    video = tmp_path / "clip.mkv"
    write_video(video, frames, fps=15)
    actions = tmp_path / "actions.json"
    actions.write_text(json.dumps(rng.integers(0, 3, 8).tolist()))
    store = tmp_path / "mine"
    simworld("import", "world=balls", f"store={store}", f"video={video}", f"actions={actions}")
    assert len(EpisodeStore(store)) == 1

    actions.write_text(json.dumps([0, 1, 2]))
    proc = simworld("import", f"store={store}", f"video={video}", f"actions={actions}", check=False)
    assert proc.returncode != 0 and "9" in proc.stderr + proc.stdout and "3" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_bench_quick_writes_every_field(tmp_path):
    out = tmp_path / "bench.json"
    proc = simworld("bench", "--quick", f"out={out}", "memory_batches=[1,4]", cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["quick"] and result["world_steps_per_s"] > 0
    assert result["store"]["bytes_per_frame"] > 0 and result["store"]["windows_per_s"] > 0
    for mode in ("rgb", "latent"):
        assert set(result["dream"][mode]) == {"1", "8", "32", "128"}
        assert all(r["steps_per_s"] > 0 for r in result["dream"][mode].values())
    assert set(result["latency_ms"]) == {"10", "20", "50", "100"}
    assert all(r["cached_ms"] > 0 and r["uncached_ms"] > 0 for r in result["latency_ms"].values())
    flops = result["flops"]
    assert flops["per_batch_step"] > 0
    for precision in ("fp32", "bf16"):
        assert flops[precision]["matmul_peak_flops"] > 0 and flops[precision]["fraction_of_peak"] > 0
    assert result["memory"]["kv_cache_mib_per_env"] > 0
    if result["memory"]["peak_mib_per_env"] is not None:  # Linux: measured from the peak RSS
        assert result["memory"]["peak_mib_by_batch"]["4"] > 0
    assert result["train"]["dynamics_frames_per_s"] > 0 and result["train"]["tokenizer_frames_per_s"] > 0
    assert all(v > 0 for v in result["decode"]["frames_per_s"].values())
    assert "imagined steps/s" in proc.stdout and "without cache" in proc.stdout  # the table


def test_rollout_and_dream_commands(checkpoint, tmp_path):
    script = tmp_path / "actions.json"
    script.write_text(json.dumps([0, 2, 2, 1]))
    proc = simworld(
        "rollout", f"checkpoint={checkpoint}", f"actions={script}", "steps=4", f"out={tmp_path / 'r'}"
    )
    assert json.loads(proc.stdout.splitlines()[0])["steps"] == 4
    assert (tmp_path / "r.npz").exists() and (tmp_path / "r.mp4").exists()

    proc = simworld(
        "dream",
        f"checkpoint={checkpoint}",
        "steps=12",
        f"out={tmp_path / 'd.mp4'}",
        f"summary={tmp_path / 'd.json'}",
        f"plot={tmp_path / 'd.png'}",
    )
    summary = json.loads((tmp_path / "d.json").read_text())
    assert summary["steps"] == 12 and summary["steps_per_s"] > 0 and "psnr_mean" in summary
    frames, _ = read_video(tmp_path / "d.mp4")
    assert frames.shape == (13, 256, 4 * (3 * 64 + 4), 3)
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_train_then_eval_model(balls_store, tmp_path):
    out = tmp_path / "run"
    simworld(
        "train",
        f"store={balls_store.root}",
        f"out={out}",
        "dynamics=tiny",
        "window=4",
        "batch_size=2",
        "steps=2",
        "bank_size=4",
        "progress=false",
    )
    assert (out / "model" / "model.safetensors").exists() and (out / "checkpoint" / "trainer.json").exists()
    proc = simworld(
        "train", f"store={balls_store.root}", f"out={out}", "dynamics=tiny", "steps=2", check=False
    )
    assert proc.returncode != 0 and "resume=true" in proc.stderr + proc.stdout
    proc = simworld(
        "eval-model",
        f"model={out / 'model'}",
        f"store={balls_store.root}",
        "horizons=[1,2]",
        "context=2",
        "val_fraction=0.5",
        "progress=false",
    )
    assert "psnr" in proc.stdout
    result = json.loads((out / "model" / "eval.json").read_text())
    assert result["psnr@1"] is not None and result["n@2"] >= 1


def test_main_job_runs_the_shipped_model(tmp_path):
    """README Quickstart's first command, shortened: the packaged Balls model dreams beside the world."""
    simworld("dream", "steps=8", cwd=tmp_path)
    summary = json.loads((tmp_path / "dream.json").read_text())
    assert summary["steps"] == 8 and summary["checkpoint"].endswith("assets/balls")
    assert (tmp_path / "dream.mp4").exists() and (tmp_path / "dream_psnr.png").exists()


def test_train_readout_writes_a_readout_with_its_floor(tmp_path):
    from simworld.probes.readout import load_readout

    out = tmp_path / "readout"
    proc = simworld(
        "train-readout", "world=cartpole", "episodes=4", "steps=12", "readout.epochs=1", "readout.width=4",
        f"out={out}", "progress=false",
    )  # fmt: skip
    assert "RMSE per dimension" in proc.stdout
    model, meta = load_readout(out)
    assert (
        model.dim == 4 and len(meta["floor"]["rmse"]) == 4
    )  # CartPole: x, x velocity, angle, angular velocity
    proc = simworld("train-readout", "world=balls", "readout.state_key=nope", f"out={out}2", "episodes=1", "steps=2",
                    check=False)  # fmt: skip
    assert proc.returncode != 0 and "nope" in proc.stderr
    # from frames already collected (an episode store with its states): no new episodes
    from simworld.data.collect import CollectConfig, collect
    from simworld.worlds import WorldConfig

    world = WorldConfig(name="cartpole", id="simworld/PixelCartPole-v1", kwargs={"frame_size": (64, 64)})
    collect(CollectConfig(world=world, out=str(tmp_path / "store"), episodes=2, policy="random", workers=1,
                          progress=False))  # fmt: skip
    proc = simworld("train-readout", "world=cartpole", f"store={tmp_path / 'store'}", "readout.epochs=1",
                    "readout.width=4", f"out={out}3", "progress=false")  # fmt: skip
    assert load_readout(f"{out}3")[1]["floor"]["pairs"] < 2 * 60  # its 2 stored episodes, not 150 new ones
