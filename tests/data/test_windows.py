"""Training windows: contents equal episode slices, counts match the formula, DataLoader works."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from simworld.data import EpisodeStore, WindowDataset, collate_windows, measure_store, sample_windows
from tests.data.conftest import make_episode

# The `store` fixture holds episodes of 5, 1, 9 and 0 steps (6, 2, 10 and 1 frames).
FRAMES = {0: 6, 1: 2, 2: 10, 3: 1}


def assert_window_matches_episode(store: EpisodeStore, item: dict, length: int) -> None:
    ep = store.load(item["episode"])
    s = item["start"]
    assert s + length <= ep.num_steps + 1  # never crosses the episode end
    np.testing.assert_array_equal(item["frames"], ep.frames[s : s + length])
    np.testing.assert_array_equal(item["actions"], ep.actions[s : s + length - 1])
    np.testing.assert_array_equal(item["rewards"], ep.rewards[s : s + length - 1])
    np.testing.assert_array_equal(item["terminated"], ep.terminated[s : s + length - 1])
    np.testing.assert_array_equal(item["truncated"], ep.truncated[s : s + length - 1])
    np.testing.assert_array_equal(item["states"]["pos"], ep.states["pos"][s : s + length])


@pytest.mark.parametrize(("length", "stride"), [(1, 1), (2, 1), (4, 1), (4, 3), (10, 1), (11, 1)])
def test_window_count_and_contents(store, length, stride):
    ds = WindowDataset(store, length, stride=stride)
    expected = sum(len(range(0, n - length + 1, stride)) for n in FRAMES.values() if n >= length)
    assert len(ds) == expected
    for i in range(len(ds)):
        item = ds[i]
        assert item["frames"].shape == (length, 16, 16, 3)
        assert item["actions"].shape == (length - 1,)
        assert item["states"]["pos"].shape == (length, 3, 2)
        assert_window_matches_episode(store, item, length)
    # Every valid (episode, start) appears exactly once.
    pairs = {(ds[i]["episode"], ds[i]["start"]) for i in range(len(ds))}
    assert len(pairs) == len(ds)


def test_episode_subset_and_out_of_range(store):
    ds = WindowDataset(store, 3, episode_ids=[2])
    assert len(ds) == 8 and {ds[i]["episode"] for i in range(8)} == {2}
    with pytest.raises(IndexError):
        ds[8]


def test_dataloader_with_two_workers(store):
    ds = WindowDataset(store, 4)
    ds[0]  # the parent now holds open (memory-mapped) handles that forked workers must not reuse
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["frames"].shape[1:] == (4, 16, 16, 3) and batch["frames"].dtype == torch.uint8
        for j in range(len(batch["episode"])):
            item = {
                k: batch[k][j].numpy() for k in ("frames", "actions", "rewards", "terminated", "truncated")
            }
            item["states"] = {"pos": batch["states"]["pos"][j].numpy()}
            item["episode"], item["start"] = int(batch["episode"][j]), int(batch["start"][j])
            assert_window_matches_episode(store, item, 4)
            seen.append((item["episode"], item["start"]))
    assert sorted(seen) == sorted(zip(ds.episodes.tolist(), ds.starts.tolist(), strict=True))


def test_dataset_pickles_for_spawned_workers(store):
    ds = WindowDataset(store, 3)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[5]["frames"], ds[5]["frames"])


def test_sample_windows_is_uniform_over_windows(store):
    rng = np.random.default_rng(0)
    batch = sample_windows(store, 5, 400, rng)
    assert batch["frames"].shape == (400, 5, 16, 16, 3) and batch["actions"].shape == (400, 4)
    # Episodes 0 and 2 have 2 and 6 windows of 5 frames: expect a 1:3 ratio, never episode 1 or 3.
    counts = np.bincount(batch["episode"], minlength=4)
    assert counts[1] == counts[3] == 0
    assert 0.18 < counts[0] / 400 < 0.32
    for j in range(0, 400, 37):
        item = {k: batch[k][j] for k in ("frames", "actions", "rewards", "terminated", "truncated")}
        item["states"] = {"pos": batch["states"]["pos"][j]}
        item["episode"], item["start"] = int(batch["episode"][j]), int(batch["start"][j])
        assert_window_matches_episode(store, item, 5)
    with pytest.raises(ValueError, match="11 frames"):
        sample_windows(store, 11, 2, rng)


def test_collate_keeps_states_shared_by_all_windows(store):
    ep = make_episode(4, state_keys=())
    ep.info["source"] = "video"  # an imported, state-less episode
    eid = store.append(ep)
    batch = collate_windows([store.read_window(0, 0, 3) | {"episode": 0, "start": 0}] * 2)
    assert set(batch["states"]) == {"pos"}
    mixed = [store.read_window(e, 0, 3) | {"episode": e, "start": 0} for e in (0, eid)]
    assert collate_windows(mixed)["states"] == {}


def test_measure_store_reports_positive_numbers(store):
    m = measure_store(store, window_length=4, n=50)
    assert m["windows_per_s"] > 0 and m["frames"] == sum(FRAMES.values())
    # Raw frames dominate: stored bytes per frame are close to H * W * 3.
    assert m["raw_bytes_per_frame"] == 16 * 16 * 3
    assert m["raw_bytes_per_frame"] <= m["bytes_per_frame"] < 2 * m["raw_bytes_per_frame"]
