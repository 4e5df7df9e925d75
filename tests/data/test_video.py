"""Video I/O: encode quality, import of recorded videos with actions, errors users will hit."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from simworld.data import (
    EpisodeStore,
    VideoReadError,
    export_episode,
    import_video,
    load_actions,
    psnr,
    read_video,
    write_video,
)
from tests.data.conftest import BOX, DISCRETE, disk_frames, make_episode, make_meta

FPS = 15.0


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return disk_frames(30, 64, 64, seed=1)


@pytest.mark.parametrize(
    ("name", "kwargs", "min_db"),
    [
        ("lossless.mp4", {"crf": 0, "pix_fmt": "yuv444p"}, 45.0),
        ("hq.mp4", {"crf": 10, "pix_fmt": "yuv444p"}, 35.0),
        ("view.mp4", {}, 25.0),  # default yuv420p halves chroma resolution: for viewing only
    ],
)
def test_mp4_round_trip_quality(tmp_path, frames, name, kwargs, min_db):
    path = write_video(tmp_path / name, frames, FPS, **kwargs)
    out, fps = read_video(path)
    assert out.shape == frames.shape and out.dtype == np.uint8 and fps == FPS
    assert psnr(out, frames) >= min_db
    assert [p.name for p in tmp_path.iterdir()] == [name]  # the temp file was renamed away


def test_upscale_and_odd_sizes(tmp_path, frames):
    out, _ = read_video(write_video(tmp_path / "big.mp4", frames[:4, :15, :9], FPS, upscale=4))
    assert out.shape == (4, 60, 36, 3)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", frames[:4, :15, :9], FPS)
    out, _ = read_video(write_video(tmp_path / "odd.mp4", frames[:4, :15, :9], FPS, pix_fmt="yuv444p", crf=0))
    assert out.shape == (4, 15, 9, 3)


def test_read_video_resizes_with_antialiasing(tmp_path):
    checker = np.zeros((2, 64, 64, 3), np.uint8)
    checker[:, ::2, ::2] = checker[:, 1::2, 1::2] = 255  # 1-pixel checkerboard: aliases without a filter
    out, _ = read_video(
        write_video(tmp_path / "c.mp4", checker, FPS, crf=0, pix_fmt="yuv444p"), size=(16, 16)
    )
    assert out.shape == (2, 16, 16, 3)
    assert np.abs(out.astype(int) - 128).max() < 20


@pytest.mark.parametrize("content", [None, b"", b"this is not a video" * 100])
def test_unreadable_video_raises_video_read_error(tmp_path, content):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        read_video(path)


def _store(tmp_path, space=DISCRETE, **kw) -> EpisodeStore:
    return EpisodeStore.create(tmp_path / "store", make_meta(space, frame_size=(64, 64), **kw))


@pytest.mark.parametrize(
    ("name", "codec"), [("clip.webm", "libvpx-vp9"), ("clip.mkv", "libx264"), ("clip.mp4", "libx264")]
)
def test_import_video_into_store_with_states(tmp_path, frames, name, codec):
    video = write_video(tmp_path / name, frames, FPS, codec=codec, crf=0, pix_fmt="yuv444p")
    actions = np.arange(29) % 4
    np.save(tmp_path / "actions.npy", actions)
    store = _store(tmp_path)  # has state_keys ["pos"]; imported episodes carry none
    eid = import_video(store, video, tmp_path / "actions.npy", info={"robot": "arm"})
    ep = EpisodeStore(store.root).load(eid)
    assert ep.num_steps == 29 and ep.states == {}
    assert psnr(ep.frames, frames) >= 40
    np.testing.assert_array_equal(ep.actions, actions)
    assert ep.truncated[-1] and not ep.truncated[:-1].any() and not ep.terminated.any()
    assert ep.info["source"] == "video" and ep.info["robot"] == "arm"
    assert (ep.rewards == 0).all()


def test_import_rejects_count_and_size_mismatch(tmp_path, frames):
    video = write_video(tmp_path / "clip.mp4", frames, FPS, crf=0, pix_fmt="yuv444p")
    store = _store(tmp_path)
    with pytest.raises(ValueError, match=r"30 frames but 30 actions.*n_frames - 1"):
        import_video(store, video, np.zeros(30, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        import_video(store, video, np.full(29, 9))
    small = EpisodeStore.create(tmp_path / "small", make_meta(frame_size=(32, 32)))
    with pytest.raises(ValueError, match="resize=True"):
        import_video(small, video, np.zeros(29, np.int64))
    eid = import_video(small, video, np.zeros(29, np.int64), resize=True)
    assert small.load(eid).frames.shape == (30, 32, 32, 3)
    assert len(store) == 0


@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_actions_from_npy_csv_json_are_identical(tmp_path, space):
    actions = make_episode(12, space, seed=3).actions
    np.save(tmp_path / "a.npy", actions)
    rows = [",".join(str(x) for x in np.atleast_1d(a).tolist()) for a in actions]
    header = "a" if space is DISCRETE else "dx,dy"
    (tmp_path / "a.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(actions.tolist()))
    (tmp_path / "b.json").write_text(json.dumps({"actions": actions.tolist()}))
    loaded = [load_actions(tmp_path / n, space) for n in ("a.npy", "a.csv", "a.json", "b.json")]
    for arr in loaded:
        assert arr.dtype == actions.dtype and arr.shape == actions.shape
        np.testing.assert_array_equal(arr, actions)
    # Without a space, integers stay int64 and reals become float32 in every format.
    for n in ("a.npy", "a.csv", "a.json"):
        np.testing.assert_array_equal(load_actions(tmp_path / n), actions)
        assert load_actions(tmp_path / n).dtype == actions.dtype


def test_bad_action_files_are_named(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    (tmp_path / "bad.json").write_text('{"acts": [1]}')
    (tmp_path / "bad.txt").write_text("1\n")
    for name in ("bad.csv", "bad.json", "bad.txt", "missing.npy"):
        with pytest.raises(ValueError, match=name):
            load_actions(tmp_path / name)
    (tmp_path / "box.json").write_text("[[0.1, 0.2, 0.3]]")
    with pytest.raises(ValueError, match="box.json"):
        load_actions(tmp_path / "box.json", gym.spaces.Box(-1, 1, (2,), np.float32))


def test_export_episode_writes_an_upscaled_mp4(tmp_path):
    store = EpisodeStore.create(tmp_path / "s", make_meta())
    eid = store.append(make_episode(6))
    path = export_episode(store, eid, tmp_path / "ep.mp4")
    out, fps = read_video(path)
    assert out.shape == (7, 64, 64, 3) and fps == 15.0
    assert psnr(out[:, ::4, ::4], store.load(eid).frames) > 20


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))
