"""EpisodeStore: round trips, metadata checks, crash safety, concurrency, splits."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from simworld.data import (
    EpisodeStore,
    StoreCorruptError,
    StoreMismatchError,
    check_action_array,
    space_to_spec,
    spec_to_space,
)
from tests.data.conftest import BOX, DISCRETE, make_episode, make_meta

REPO = Path(__file__).resolve().parents[2]


def assert_episodes_equal(a, b) -> None:
    for name in ("frames", "actions", "rewards", "terminated", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.states.keys() == b.states.keys()
    for k in a.states:
        assert a.states[k].dtype == b.states[k].dtype
        np.testing.assert_array_equal(a.states[k], b.states[k])
    assert a.info == b.info


# ---- spaces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Discrete(5, start=-2),
        gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        gym.spaces.Box(np.array([0.0, -np.inf], np.float32), np.array([0.5, np.inf], np.float32)),
        gym.spaces.Box(0, 255, (2, 2), np.uint8),
    ],
)
def test_space_spec_round_trips_through_json(space):
    spec = space_to_spec(space)
    assert spec_to_space(json.loads(json.dumps(spec, allow_nan=False))) == space


def test_unsupported_space_is_named():
    with pytest.raises(ValueError, match="MultiBinary"):
        space_to_spec(gym.spaces.MultiBinary(3))


def test_check_action_array_names_the_space():
    with pytest.raises(ValueError, match=r"Discrete\(4\)"):
        check_action_array(np.array([0, 4]), DISCRETE, 2)
    with pytest.raises(ValueError, match="Box"):
        check_action_array(np.zeros((3, 3), np.float32), BOX, 3)
    check_action_array(np.array([0, 3]), DISCRETE, 2)


# ---- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_append_load_round_trip_is_exact(tmp_path, space):
    store = EpisodeStore.create(tmp_path / "s", make_meta(space))
    episodes = [make_episode(7, space, seed=1), make_episode(3, space, seed=2, terminated=True)]
    assert [store.append(ep) for ep in episodes] == [0, 1]

    reopened = EpisodeStore(tmp_path / "s")
    assert reopened.episode_ids == [0, 1] and len(reopened) == 2
    assert reopened.lengths == {0: 7, 1: 3}
    assert reopened.num_frames == 8 + 4
    for eid, ep in enumerate(episodes):
        assert_episodes_equal(reopened.load(eid), ep)
    assert reopened.load(0).actions.dtype == (np.int64 if space is DISCRETE else np.float32)
    assert (tmp_path / "s" / "episodes" / "000001.safetensors").is_file()
    assert reopened.bytes_on_disk() > 12 * 16 * 16 * 3


def test_other_process_appends_are_seen_after_refresh(store):
    other = EpisodeStore(store.root)
    other.append(make_episode(2, seed=9))
    assert len(store) == 4
    store.refresh()
    assert store.episode_ids == [0, 1, 2, 3, 4] and store.lengths[4] == 2
    assert store.read_window(4, 0, 3)["frames"].shape == (3, 16, 16, 3)


# ---- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "override"),
    [
        ("world_id", {"world_id": "simworld/Push-v0"}),
        ("frame_size", {"frame_size": (32, 32)}),
        ("action_space", {"action_space": gym.spaces.Discrete(6)}),
        ("state_keys", {"state_keys": ["pos", "vel"]}),
    ],
)
def test_create_with_mismatched_meta_names_the_field(tmp_path, field, override):
    EpisodeStore.create(tmp_path, make_meta())
    with pytest.raises(StoreMismatchError, match=field) as err:
        EpisodeStore.create(tmp_path, make_meta(**override))
    old, new = str(getattr(make_meta(), field)), str(getattr(make_meta(**override), field))
    assert old in str(err.value) and new in str(err.value)


def test_create_reopens_compatible_store_and_keeps_episodes(store):
    again = EpisodeStore.create(store.root, make_meta(fps=30.0, world_params={"n_balls": 5}))
    assert len(again) == 4 and again.meta.fps == 15.0  # the existing meta wins
    with pytest.raises(FileExistsError):
        EpisodeStore.create(store.root, make_meta(), exist_ok=False)


def test_open_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EpisodeStore(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        EpisodeStore.open(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"format_version": 99}), "format_version"),
        (json.dumps({"format_version": 1, "world_id": "x"}), "missing field"),
    ],
)
def test_corrupt_meta_raises_store_corrupt_error(tmp_path, content, problem):
    (tmp_path / "meta.json").write_text(content)
    with pytest.raises(StoreCorruptError, match=problem) as err:
        EpisodeStore(tmp_path)
    assert "meta.json" in str(err.value)


# ---- validation of appended episodes ---------------------------------------------------------


def test_append_rejects_episodes_that_do_not_fit(store):
    with pytest.raises(StoreMismatchError, match="frame size"):
        store.append(make_episode(3, size=(16, 8)))
    bad = make_episode(3)
    bad.actions[1] = 7
    with pytest.raises(ValueError, match=r"Discrete\(4\)"):
        store.append(bad)
    with pytest.raises(ValueError, match=r"Discrete\(4\)"):
        store.append(make_episode(3, space=BOX))
    with pytest.raises(StoreMismatchError, match="state keys"):
        store.append(make_episode(3, state_keys=()))
    bad = make_episode(3)
    bad.rewards = bad.rewards.astype(np.float64)
    with pytest.raises(ValueError, match="rewards must be float32"):
        store.append(bad)
    bad = make_episode(3)
    bad.truncated[0] = True  # two episodes glued together
    with pytest.raises(ValueError, match="only the last step"):
        store.append(bad)
    assert len(store) == 4 and sorted(os.listdir(store.episodes_dir)) == [
        f"{i:06d}.safetensors" for i in range(4)
    ]


def test_bad_ids_and_windows_raise_index_error(store):
    with pytest.raises(IndexError, match="episode 17"):
        store.load(17)
    with pytest.raises(IndexError, match="does not fit"):
        store.read_window(0, 3, 4)  # 6 frames: 3 + 4 > 6
    with pytest.raises(IndexError, match="does not fit"):
        store.read_window(0, -1, 2)


def test_corrupt_episode_file_is_reported_by_name(store):
    path = store.episode_path(2)
    path.write_bytes(path.read_bytes()[:500])  # truncated
    fresh = EpisodeStore(store.root)
    with pytest.raises(StoreCorruptError, match="000002.safetensors"):
        fresh.load(2)
    with pytest.raises(StoreCorruptError, match="000002.safetensors"):
        fresh.lengths  # noqa: B018
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StoreCorruptError, match="000002.safetensors"):
        EpisodeStore(store.root).read_window(2, 0, 1)
    assert fresh.load(0).num_steps == 5  # the other episodes stay readable


# ---- crash safety and concurrency ------------------------------------------------------------

CRASH_SCRIPT = """
import sys, time
import safetensors.numpy
import simworld.data.store as store_module
from simworld.data import EpisodeStore
from tests.data.conftest import make_episode, make_meta

store = EpisodeStore.create(sys.argv[1], make_meta())
for i in range(3):
    store.append(make_episode(4, seed=i))

def stalled_save_file(tensors, filename, metadata=None):
    # Write half of the real bytes, then hang: the parent kills us mid-write.
    data = safetensors.numpy.save(tensors, metadata=metadata)
    with open(filename, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
    print("WRITING", filename, flush=True)
    time.sleep(60)

store_module.save_file = stalled_save_file
store.append(make_episode(200, seed=99))
"""


def test_sigkill_during_append_leaves_store_readable(tmp_path):
    root = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(root)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("WRITING"), line
        temp = Path(line.split()[1])
        assert temp.exists() and temp.name.startswith(".000003.safetensors.tmp-")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()

    store = EpisodeStore(root)
    assert store.episode_ids == [0, 1, 2]
    for eid in store.episode_ids:
        assert store.load(eid).num_steps == 4
    assert temp.exists()  # readers ignore it ...
    assert store.append(make_episode(2, seed=5)) == 3
    assert not temp.exists()  # ... and the next append removes it
    assert EpisodeStore(root).lengths == {0: 4, 1: 4, 2: 4, 3: 2}


def _append_many(root: str, seed: int) -> None:
    store = EpisodeStore(root)
    for i in range(4):
        store.append(make_episode(2, seed=seed * 10 + i))


def test_concurrent_appends_get_distinct_ids(store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(store.root), s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    store.refresh()
    assert store.episode_ids == list(range(12))
    seeds = sorted(store.info(e)["seed"] for e in range(4, 12))
    assert seeds == [10, 11, 12, 13, 20, 21, 22, 23]


# ---- split -----------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_covering_and_stable(tmp_path):
    store = EpisodeStore.create(tmp_path, make_meta(state_keys=[]))
    for i in range(30):
        store.append(make_episode(0, seed=i, state_keys=()))
    train, val = store.split(0.2, seed=3)
    assert (train, val) == EpisodeStore(tmp_path).split(0.2, seed=3)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(30))
    assert 1 <= len(val) <= 15
    assert store.split(0.2, seed=4) != (train, val)

    for i in range(30, 60):
        store.append(make_episode(0, seed=i, state_keys=()))
    train2, val2 = store.split(0.2, seed=3)
    assert set(train) <= set(train2) and set(val) <= set(val2)  # nobody moved


def test_split_has_a_validation_episode_when_possible(tmp_path):
    store = EpisodeStore.create(tmp_path, make_meta(state_keys=[]))
    store.append(make_episode(1, state_keys=()))
    assert store.split(0.1) == ([0], [])
    store.append(make_episode(1, state_keys=()))
    train, val = store.split(0.01)
    assert len(val) == 1 and len(train) == 1
    assert store.split(0.0) == ([0, 1], [])


def test_action_stats_count_repeats_within_episodes_only(tmp_path):
    import dataclasses

    from simworld.data.store import action_stats

    s = EpisodeStore.create(tmp_path / "acts", make_meta())
    for i, actions in enumerate(([1, 1, 1, 3], [3, 0], [])):  # the 3 -> 3 across episodes is no repeat
        ep = make_episode(len(actions), seed=i)
        s.append(dataclasses.replace(ep, actions=np.array(actions, np.int64)))
    stats = action_stats(s)
    assert stats["steps"] == 6 and stats["counts"] == [1, 3, 0, 2]
    assert stats["repeat_share"] == pytest.approx(2 / 4)  # pairs: 1-1, 1-1, 1-3, 3-0
    assert action_stats(s, [1])["repeat_share"] == 0.0
    assert action_stats(s, [2]) == {"steps": 0, "repeat_share": None, "counts": [0, 0, 0, 0]}

    box = EpisodeStore.create(tmp_path / "box", make_meta(BOX))
    ep = make_episode(3, BOX)
    held = np.array([[0.5, -0.5], [0.5, -0.5], [0.5, 0.2]], np.float32)  # only both dims equal repeat
    box.append(dataclasses.replace(ep, actions=held))
    assert action_stats(box) == {"steps": 3, "repeat_share": 0.5, "counts": None}
