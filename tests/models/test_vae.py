import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from simworld.checkpoint import CheckpointError
from simworld.data import EpisodeStore
from simworld.models.tokenizer import IdentityTokenizer, IdentityTokenizerConfig, frames_to_tensor
from simworld.models.vae import VAE, VAEConfig, load_tokenizer, save_tokenizer
from simworld.train import tokenizer as train_mod
from simworld.train.tokenizer import TokenizerTrainConfig, train_tokenizer
from tests.data.conftest import disk_frames, make_episode, make_meta


def tiny_cfg(**kw) -> VAEConfig:
    kw.setdefault("frame_size", (16, 16))
    kw.setdefault("downsample", 4)
    levels = {4: 3, 8: 4}[kw["downsample"]]
    return VAEConfig(latent_channels=4, channels=(8,) * levels, blocks=(0,) + (1,) * (levels - 1), **kw)


def tiny_vae(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(tiny_cfg(**kw))


@pytest.mark.parametrize(
    ("frame_size", "downsample", "latent_size"),
    [((16, 16), 4, (4, 4)), ((32, 32), 8, (4, 4)), ((24, 40), 8, (3, 5)), ((12, 20), 4, (3, 5))],
)
def test_shapes(frame_size, downsample, latent_size):
    model = tiny_vae(frame_size=frame_size, downsample=downsample)
    assert model.cfg.latent_size == latent_size
    x = torch.rand(2, 3, 3, *frame_size) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 3, model.cfg.latent_channels, *latent_size)
    y = model.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        VAEConfig(downsample=8, channels=(8, 8, 8), blocks=(0, 1, 1))
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(frame_size=(62, 64))
    with pytest.raises(ValueError, match="power of two"):
        VAEConfig(downsample=6)


def test_a_latent_depends_on_its_own_frame_only():
    model = tiny_vae().eval()
    x = torch.rand(1, 4, 3, 16, 16) * 2 - 1
    x2 = x.clone()
    x2[:, 2] = torch.rand(3, 16, 16) * 2 - 1
    with torch.no_grad():
        z, z2 = model.encode(x), model.encode(x2)
        y, y2 = model.decode(z), model.decode(z2)
    for t in (0, 1, 3):
        torch.testing.assert_close(z[:, t], z2[:, t], rtol=0, atol=0)
        torch.testing.assert_close(y[:, t], y2[:, t], rtol=0, atol=0)
    assert not torch.equal(z[:, 2], z2[:, 2])


def test_overfits_one_batch():
    model = tiny_vae()
    batch = {"frames": torch.from_numpy(disk_frames(4, 16, 16)).view(1, 4, 16, 16, 3)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    psnrs = []
    for _ in range(60):
        loss, logs = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        psnrs.append(logs["train/psnr"])
    assert set(logs) >= {"train/loss", "train/recon", "train/kl", "train/psnr"}
    assert np.mean(psnrs[-5:]) > np.mean(psnrs[:5]) + 8, psnrs[::10]


def test_runs_under_bf16_autocast():
    model = tiny_vae()
    batch = {"frames": torch.from_numpy(disk_frames(4, 16, 16)).view(1, 4, 16, 16, 3)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(batch)
        z = model.encode(frames_to_tensor(batch["frames"]))
    loss.backward()
    assert torch.isfinite(loss) and z.dtype == torch.float32


def test_latent_normalisation_gives_unit_variance():
    model = tiny_vae().eval()
    x = frames_to_tensor(disk_frames(8, 16, 16)).unsqueeze(0)  # (1, 8, 3, 16, 16)
    with torch.no_grad():
        model.fit_latent_normalisation(model.posterior(x)[0])
        z = model.encode(x)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4


def test_save_load_round_trip(tmp_path):
    model = tiny_vae().eval()
    x = frames_to_tensor(disk_frames(3, 16, 16)).unsqueeze(0)
    with torch.no_grad():
        model.fit_latent_normalisation(model.posterior(x)[0] * 3 + 1)
    save_tokenizer(model, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, VAE) and loaded.cfg == model.cfg
    z = torch.randn(1, 2, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=0, atol=0)


def test_identity_tokenizer_round_trip(tmp_path):
    save_tokenizer(IdentityTokenizer(IdentityTokenizerConfig(unshuffle=2, frame_size=(8, 8))), tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, IdentityTokenizer) and loaded.cfg.unshuffle == 2
    assert loaded.encode(torch.zeros(1, 1, 3, 8, 8)).shape == (1, 1, 12, 4, 4)


def test_broken_tokenizer_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    save_tokenizer(tiny_vae(), tmp_path)
    weights, config = tmp_path / "tokenizer.safetensors", tmp_path / "tokenizer.json"

    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_tokenizer(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_tokenizer(tmp_path)
    weights.write_bytes(raw)

    d = json.loads(config.read_text())
    config.write_text(json.dumps({**d, "latent_channels": 6}))
    with pytest.raises(CheckpointError, match="does not match"):
        load_tokenizer(tmp_path)
    config.write_text(json.dumps({**d, "kind": "magic"}))
    with pytest.raises(CheckpointError, match="unknown tokenizer kind"):
        load_tokenizer(tmp_path)
    config.write_text(json.dumps({**d, "downsample": 3}))
    with pytest.raises(CheckpointError, match="invalid vae config"):
        load_tokenizer(tmp_path)
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_tokenizer(tmp_path)


# ---- training ---------------------------------------------------------------------------------


@pytest.fixture
def frame_store(tmp_path) -> EpisodeStore:
    store = EpisodeStore.create(tmp_path / "store", make_meta())
    for seed in range(4):
        store.append(make_episode(12, seed=seed))
    return store


def train_cfg(store: EpisodeStore, out, **kw) -> TokenizerTrainConfig:
    base = dict(
        store=str(store.root),
        out=str(out),
        steps=6,
        batch_size=4,
        lr=3e-3,
        warmup=2,
        val_fraction=0.5,
        eval_every=3,
        eval_frames=8,
        final_eval_frames=16,
        norm_frames=16,
        ckpt_every=3,
        log_every=2,
        progress=False,
        vae=dict(latent_channels=4, channels=(8, 8, 8), blocks=(0, 1, 1)),
    )
    return TokenizerTrainConfig(**{**base, **kw})


def test_train_tokenizer_end_to_end(frame_store, tmp_path):
    out = tmp_path / "run"
    metrics = train_tokenizer(train_cfg(frame_store, out))
    assert {"psnr", "ssim", "psnr_fg", "latent_scale", "latent_shift"} <= set(metrics)
    assert json.loads((out / "eval.json").read_text())["psnr"] == pytest.approx(metrics["psnr"])
    assert list((out / "tb").glob("events.out.tfevents.*"))
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    model = load_tokenizer(out)
    assert model.cfg.latent_scale == pytest.approx(metrics["latent_scale"])
    x = frames_to_tensor(frame_store.load(0).frames[None, :3])  # (1, 3, 3, 16, 16)
    assert model.decode(model.encode(x)).shape == x.shape
    with pytest.raises(FileExistsError, match="resume=True"):
        train_tokenizer(train_cfg(frame_store, out))


def test_resume_matches_an_uninterrupted_run(frame_store, tmp_path, monkeypatch):
    train_tokenizer(train_cfg(frame_store, tmp_path / "straight"))

    save = train_mod._save_checkpoint

    def save_then_crash(out, model, opt, step, *args):
        save(out, model, opt, step, *args)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(train_cfg(frame_store, tmp_path / "resumed"))
    monkeypatch.setattr(train_mod, "_save_checkpoint", save)
    train_tokenizer(train_cfg(frame_store, tmp_path / "resumed", resume=True))

    a = load_file(str(tmp_path / "straight" / "tokenizer.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "tokenizer.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ja = json.loads((tmp_path / "straight" / "tokenizer.json").read_text())
    jb = json.loads((tmp_path / "resumed" / "tokenizer.json").read_text())
    assert ja == jb
