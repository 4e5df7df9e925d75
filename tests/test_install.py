"""A regular (non-editable) install into a fresh virtual environment finds its configs."""

import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_regular_install_runs_collect(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # This interpreter's site-packages supply torch & co. (after the venv's own, so the fresh install wins).
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parents = {*site.getsitepackages(), sysconfig.get_paths()["purelib"]}
    (Path(purelib) / "_parent_site.pth").write_text("\n".join(sorted(parents)) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import simworld, configs; print(simworld.__file__); print(configs.__file__)"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(REPO) not in where and str(env_dir) in where
    proc = subprocess.run(
        [
            str(env_dir / "bin" / "simworld"),
            "collect",
            "episodes=1",
            "workers=1",
            "max_steps=5",
            "video=false",
            "progress=false",
            "out=store",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (work / "store" / "meta.json").exists()
    # the shipped policies come with the package: `policy=shipped:cartpole` works from anywhere
    shipped = subprocess.run(
        [str(py), "-c", "from agents.train import policy_file; print(policy_file('shipped:cartpole'))"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert shipped.returncode == 0 and str(env_dir) in shipped.stdout, shipped.stderr
