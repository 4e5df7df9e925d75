"""The world model end to end on tiny configs: learning, rollouts, persistence, resume, bad input."""

import json

import numpy as np
import pytest
import torch

from simworld.checkpoint import CheckpointError
from simworld.data.collect import CollectConfig, collect
from simworld.data.store import EpisodeStore
from simworld.data.windows import WindowDataset
from simworld.evaluate import EvalConfig, evaluate_model
from simworld.metrics import psnr_uint8
from simworld.train.common import batch_for_step, mirror_batch
from simworld.train.world_model import TrainConfig, train_world_model
from simworld.world_model import WorldModel, WorldModelConfig
from simworld.worlds import WorldConfig

TINY = {"size": "tiny", "context": 4}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "balls"
    collect(
        CollectConfig(world=WorldConfig(), out=str(out), episodes=6, workers=1, max_steps=40, progress=False)
    )
    return EpisodeStore(out)


def tiny_model(seed=0, **dynamics):
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig(dynamics={**TINY, **dynamics}))


def test_tiny_model_overfits_one_batch(store):
    model = tiny_model()
    batch = batch_for_step(WindowDataset(store, 4), 4, seed=0, step=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = np.mean([model(batch)[1]["train/denoise"] for _ in range(5)])
    for _ in range(150):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    last = np.mean([model(batch)[1]["train/denoise"] for _ in range(5)])
    assert last < 0.5 * first, (first, last)


def rollout(model, frames, actions, steps=3, seed=0):
    state = model.reset(frames, actions, generator=torch.Generator().manual_seed(seed))
    outs = [model.step(state, np.array([i % 3, 2])) for i in range(steps)]
    return np.stack([o[0] for o in outs]), np.stack([o[2] for o in outs]), np.stack([o[3] for o in outs])


def test_rollout_shapes_and_seeded_determinism(store):
    model = tiny_model().eval()
    ep = store.load(0)
    frames = np.stack([ep.frames[:3], ep.frames[1:4]])
    actions = np.stack([ep.actions[:2], ep.actions[1:3]])
    f1, r1, t1 = rollout(model, frames, actions)
    assert f1.shape == (3, 2, 64, 64, 3) and f1.dtype == np.uint8
    assert r1.shape == (3, 2) and np.all((t1 >= 0) & (t1 <= 1))
    f2, _, _ = rollout(model, frames, actions)
    np.testing.assert_array_equal(f1, f2)
    f3, _, _ = rollout(model, frames, actions, seed=1)
    assert not np.array_equal(f1, f3)


def test_set_sampling_changes_the_frames_and_rejects_bad_values(store):
    model = tiny_model().eval()
    ep = store.load(0)
    frames, actions = np.stack([ep.frames[:3]] * 2), np.stack([ep.actions[:2]] * 2)
    one_step, _, _ = rollout(model, frames, actions)
    model.set_sampling(steps=3, sampler="heun")
    assert (model.diffusion.steps, model.diffusion.sampler) == (3, "heun")
    assert not np.array_equal(rollout(model, frames, actions)[0], one_step)
    model.set_sampling()  # None keeps what is set
    assert (model.diffusion.steps, model.diffusion.sampler) == (3, "heun")
    with torch.no_grad():  # the zero-initialised output layers ignore the context: wake them up
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    held = rollout(model, frames, actions)[0]
    model.set_sampling(context_sigma=0.5)  # the context held at another noise level: other frames
    assert model.diffusion.context_sigma == 0.5
    assert not np.array_equal(rollout(model, frames, actions)[0], held)
    for bad, match in (
        ({"steps": 0}, "steps"),
        ({"sampler": "ddim"}, "ddim"),
        ({"warm_start_sigma": -1}, "warm"),
        ({"context_sigma": 0}, "context_sigma"),
    ):
        with pytest.raises(ValueError, match=match):
            model.set_sampling(**bad)


def test_action_guidance_pushes_the_taken_actions_frame_away_from_the_mean_over_actions(store):
    model = tiny_model().eval()
    with torch.no_grad():  # zero-initialised output layers would make every action's frame the same
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.clip_latent = lambda z: z  # compare the sampler's output itself
    ep = store.load(0)
    frames, actions = ep.frames[None, :3], ep.actions[None, :2]

    def first_latent(action):  # one step from the same start with the same noise
        state = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
        return model.step(state, np.array([action]), decode=False)[1]

    plain = [first_latent(a) for a in range(3)]  # Balls: Discrete(3)
    assert not torch.allclose(plain[0], plain[1])  # the actions matter at all
    model.set_sampling(action_guidance=1.5)
    mean = torch.stack(plain).mean(0)
    for a in range(3):
        torch.testing.assert_close(first_latent(a), plain[a] + 1.5 * (plain[a] - mean), rtol=1e-4, atol=1e-5)
    for bad, match in (({"action_guidance": -1}, "action_guidance"),):
        with pytest.raises(ValueError, match=match):
            model.set_sampling(**bad)
    assert model.diffusion.action_guidance == 1.5  # a rejected value leaves the setting as it was
    box = WorldModel(
        WorldModelConfig(dynamics=TINY, action_space={"type": "Box", "shape": [2], "low": -1, "high": 1})
    )
    with pytest.raises(ValueError, match="Discrete"):
        box.set_sampling(action_guidance=1.0)


@pytest.mark.parametrize("prev_frames", [1, 2])
def test_save_load_round_trip_gives_identical_rollouts(store, tmp_path, prev_frames):
    model = tiny_model(seed=3, prev_frames=prev_frames).eval()
    bank = {"frames": store.load(0).frames[None, :3], "actions": store.load(0).actions[None, :2]}
    model.save_pretrained(tmp_path / "m", start_bank=bank)
    loaded = WorldModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(loaded.start_bank["frames"], bank["frames"])
    np.testing.assert_array_equal(
        rollout(model, bank["frames"].repeat(2, 0), bank["actions"].repeat(2, 0))[0],
        rollout(loaded, bank["frames"].repeat(2, 0), bank["actions"].repeat(2, 0))[0],
    )
    assert not list(tmp_path.glob(".m.*")), "temporary directories are cleaned up"


@pytest.mark.parametrize("mirror_actions", [None, [2, 1, 0]])
def test_resume_matches_an_uninterrupted_run(store, tmp_path, mirror_actions):
    common = dict(
        store=str(store.root),
        mirror_actions=mirror_actions,
        dynamics=TINY,
        window=4,
        batch_size=2,
        bank_size=4,
        progress=False,
        ckpt_every=2,
        warmup=2,
        steps=4,
    )
    train_world_model(TrainConfig(out=str(tmp_path / "a"), **common))
    train_world_model(TrainConfig(out=str(tmp_path / "b"), **{**common, "steps": 2}))
    with pytest.raises(FileExistsError, match="resume"):
        train_world_model(TrainConfig(out=str(tmp_path / "b"), **common))
    train_world_model(TrainConfig(out=str(tmp_path / "b"), resume=True, **common))
    a = WorldModel.from_pretrained(tmp_path / "a" / "model").state_dict()
    b = WorldModel.from_pretrained(tmp_path / "b" / "model").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    seen = np.unique(np.concatenate([store.load(e).rewards for e in store.episode_ids]))
    assert WorldModel.from_pretrained(tmp_path / "b" / "model").cfg.reward_values == seen.tolist()


def test_stages_with_schedule_steps_follow_one_learning_rate_schedule(store, tmp_path):
    """The agent loop trains its model in rounds, each resuming the last with more steps. Given the
    total, the rounds land on the same weights as one uninterrupted run; without it each round's
    schedule decays to its floor and starts the next round low, so the weights differ."""
    common = dict(
        store=str(store.root), dynamics=TINY, window=4, batch_size=2, bank_size=4, progress=False, warmup=1
    )
    train_world_model(TrainConfig(out=str(tmp_path / "one"), steps=6, **common))
    for out, total in (("staged", 6), ("round", None)):
        for steps in (2, 4, 6):
            resume = steps > 2
            train_world_model(
                TrainConfig(
                    out=str(tmp_path / out), steps=steps, schedule_steps=total, resume=resume, **common
                )
            )
    one, staged, rounds = (
        WorldModel.from_pretrained(tmp_path / o / "model").state_dict() for o in ("one", "staged", "round")
    )
    for k in one:
        torch.testing.assert_close(staged[k], one[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(rounds[k], one[k]) for k in one), (
        "rounds without the total follow another schedule"
    )
    with pytest.raises(ValueError, match="schedule_steps=2 is fewer than steps=4"):
        train_world_model(TrainConfig(out=str(tmp_path / "bad"), steps=4, schedule_steps=2, **common))


def test_resume_keeps_the_reward_classes_when_the_store_grows_new_rewards(store, tmp_path, monkeypatch):
    import simworld.train.world_model as twm

    common = dict(store=str(store.root), dynamics=TINY, window=4, batch_size=2, bank_size=4, progress=False)
    train_world_model(TrainConfig(out=str(tmp_path), steps=2, **common))
    first = WorldModel.from_pretrained(tmp_path / "model").cfg.reward_values
    # the loop's store gained an episode with four simultaneous hits since
    monkeypatch.setattr(twm, "reward_values", lambda s, max_values=16: sorted({*first, 4.0}))
    train_world_model(TrainConfig(out=str(tmp_path), steps=4, resume=True, **common))
    assert WorldModel.from_pretrained(tmp_path / "model").cfg.reward_values == first


def test_bad_checkpoints_get_clear_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        WorldModel.from_pretrained(tmp_path / "nope")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        WorldModel.from_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["dynamics"]["dim"] = 96
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        WorldModel.from_pretrained(tmp_path / "m")
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version"):
        WorldModel.from_pretrained(tmp_path / "m")


def test_bad_rollout_inputs(store):
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="context frames"):
        model.reset(np.zeros((1, 2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="context actions"):
        model.reset(np.zeros((1, 2, 64, 64, 3), np.uint8), np.zeros((1, 3), np.int64))


def test_evaluate_reports_every_horizon(store):
    model = tiny_model().eval()
    cfg = EvalConfig(horizons=[1, 4, 16], context=2, progress=False)
    result = evaluate_model(model, store, store.episode_ids[:3], cfg)
    for h in (1, 4, 16):
        assert result[f"psnr@{h}"] is not None and 0 < result[f"ssim@{h}"] <= 1
        assert 0 <= result[f"object_recall@{h}"] <= 1 and result[f"object_ghost@{h}"] >= 0
        assert 0 <= result[f"copy_last_object_recall@{h}"] <= 1
    assert result["terminations"] >= 0 and result["reward_mae"] >= 0
    # the termination head read on the real frames too, apart from what the rollout shows it
    assert 0 <= result["termination_real_mean_prob_other"] <= 1
    assert "termination_real_auroc" in result and "termination_real_best_threshold" in result
    assert "reward_real_mean_unpaid" in result
    # Balls has a paddle: what a contact gate would keep of the real rewards and of the rollouts'
    assert 0 <= result["contact_gate_real_steps_passed"] < 0.5
    assert result["contact_gate_real_reward_kept"] in (None, 1.0)  # None: these episodes paid nothing
    kept, unseen = result["contact_gate_rollout_reward_kept"], result["contact_gate_rollout_reward_unseen"]
    assert kept is None or 0 <= kept + unseen <= 1 + 1e-9  # shown, or dissolved, or too far: disjoint
    # and a floor: what the floor check would keep of the real terminations and of the rollouts'
    assert 0 <= result["floor_gate_real_steps_passed"] < 0.5
    assert result["floor_gate_real_terminations_kept"] in (None, 1.0)  # None: no episode ended
    assert "floor_gate_rollout_termination_kept" in result


def test_evaluate_reads_the_state_error_off_the_rollouts_with_a_readout(store, tmp_path):
    """eval-model readout=: the rms error of the state the readout reads, imagined vs real frames,
    beside repeating the last real frame; a model that draws the real frames has none."""
    from simworld.evaluate import _windows
    from simworld.probes.readout import ReadoutConfig, StateReadout, save_readout

    torch.manual_seed(1)  # random weights: some fixed function of the frames, in 4 "state" dimensions
    readout = save_readout(StateReadout(4), ReadoutConfig(), tmp_path / "readout", (64, 64), {})
    ids = store.episode_ids[:3]
    cfg = EvalConfig(horizons=[1, 4], context=2, progress=False, filmstrip=0, readout=str(readout))
    model = tiny_model().eval()
    drawn = evaluate_model(model, store, ids, cfg)
    for h in (1, 4):
        assert len(drawn[f"state_rmse@{h}"]) == 4 and min(drawn[f"state_rmse@{h}"]) > 0
        assert len(drawn[f"copy_last_state_rmse@{h}"]) == 4
    truth, step, k = _windows(store, ids, 2, 4)[0], model.step, [0]

    def perfect(state, actions, **kw):  # the model's step, but drawing the world's next frame
        out = step(state, actions, **kw)
        k[0] += 1
        return (truth[:, 1 + k[0]], *out[1:])

    model.step = perfect
    exact = evaluate_model(model, store, ids, cfg)
    assert max(exact["state_rmse@1"] + exact["state_rmse@4"]) == 0
    assert exact["copy_last_state_rmse@4"] == drawn["copy_last_state_rmse@4"]
    assert max(exact["copy_last_state_rmse@4"]) > 0  # the frozen frame is wrong where things move


def test_evaluate_reports_the_readouts_own_error_on_the_real_frames(store, tmp_path):
    """A readout learnt on other frames (random-action episodes) can be far off on these, blurring
    every state error eval-model reports: where the store records the readout's state, the readout's
    own error on the real frames is reported beside them, each frame against its own recorded state."""
    from simworld.evaluate import _windows
    from simworld.probes.readout import ReadoutConfig, StateReadout, load_readout, read_pairs, save_readout

    torch.manual_seed(2)
    cfg = ReadoutConfig(state_key="paddle_pos")
    readout = save_readout(StateReadout(2), cfg, tmp_path / "readout", (64, 64), {})
    ids = store.episode_ids[:3]
    ecfg = EvalConfig(horizons=[1, 4], context=2, progress=False, filmstrip=0, readout=str(readout))
    result = evaluate_model(tiny_model().eval(), store, ids, ecfg)
    windows = _windows(store, ids, 2, 4)
    frames, valid, ro, errors = windows[0], windows[4], load_readout(readout)[0], []
    for i, eid in enumerate(ids):  # each imagined step's real frame, read, against the state recorded with it
        T = store.num_steps(eid)
        start = max(0, T + 1 - 6)
        states = store.read_array(eid, "state/paddle_pos")
        for k in range(4):
            if valid[i, k]:
                read = read_pairs(ro, frames[i, 1 + k][None], frames[i, 2 + k][None])[0]
                errors.append(read - states[start + 2 + k])
    expected = np.sqrt(np.mean(np.square(errors), 0))
    np.testing.assert_allclose(result["readout_rmse_real"], expected, rtol=1e-5)
    # a readout of a state this store does not record: nothing to compare with, nothing reported
    other = save_readout(StateReadout(2), ReadoutConfig(state_key="obs"), tmp_path / "other", (64, 64), {})
    result = evaluate_model(
        tiny_model().eval(), store, ids, EvalConfig(**{**vars(ecfg), "readout": str(other)})
    )
    assert "readout_rmse_real" not in result and "state_rmse@1" in result
    # ... nor for one whose state has the name but not the shape of this store's (another world's)
    odd = save_readout(StateReadout(3), cfg, tmp_path / "odd", (64, 64), {})
    result = evaluate_model(
        tiny_model().eval(), store, ids, EvalConfig(**{**vars(ecfg), "readout": str(odd)})
    )
    assert "readout_rmse_real" not in result and len(result["state_rmse@1"]) == 3


def test_reward_head_scores_snap_like_the_dream():
    from simworld.evaluate import reward_head_scores

    pred = np.array([0.9, 0.4, 0.05, 0.6, -0.1], np.float32)
    true = np.array([1.0, 1.0, 0.0, 0.0, 0.0], np.float32)
    out = reward_head_scores(pred, true, [0.0, 1.0])
    assert out["reward_real_paid_transitions"] == 2
    assert out["reward_real_snapped_hit_rate"] == 0.5 and out["reward_real_snapped_false_pay"] == 1 / 3
    np.testing.assert_allclose(out["reward_real_mean_paid"], 0.65, rtol=1e-6)
    assert "reward_real_snapped_hit_rate" not in reward_head_scores(pred, true, None)


def test_warm_start_sampling_starts_from_the_previous_frame(store):
    model = tiny_model().eval()
    ep = store.load(0)
    frames, actions = ep.frames[None, :3], ep.actions[None, :2]
    cold = rollout(model, frames.repeat(2, 0), actions.repeat(2, 0), steps=1)[0]
    model.diffusion.warm_start_sigma = 0.05  # barely noised: the sample stays near the last frame
    warm = rollout(model, frames.repeat(2, 0), actions.repeat(2, 0), steps=1)[0]
    last = frames[0, -1].astype(float)
    assert np.abs(warm[0, 0] - last).mean() < np.abs(cold[0, 0] - last).mean()


def test_world_model_on_a_trained_vae_tokenizer(store, tmp_path):
    from simworld.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    vae = {"channels": [8, 8, 16], "blocks": [0, 0, 1], "latent_channels": 4}
    train_tokenizer(
        TokenizerTrainConfig(
            store=str(store.root),
            out=str(tmp_path / "vae"),
            steps=2,
            batch_size=4,
            eval_every=0,
            final_eval_frames=8,
            norm_frames=16,
            progress=False,
            vae=vae,
        )
    )
    train_world_model(
        TrainConfig(
            store=str(store.root),
            out=str(tmp_path / "wm"),
            tokenizer_path=str(tmp_path / "vae"),
            dynamics=TINY,
            window=4,
            batch_size=2,
            steps=2,
            bank_size=4,
            progress=False,
        )
    )
    model = WorldModel.from_pretrained(tmp_path / "wm" / "model")
    assert model.cfg.tokenizer["kind"] == "vae" and model.latent_channels == 4
    ep = store.load(0)
    frames, _, _ = rollout(
        model, ep.frames[None, :3].repeat(2, 0), ep.actions[None, :2].repeat(2, 0), steps=1
    )
    assert frames.shape == (1, 2, 64, 64, 3)


def test_terminal_oversampling_draws_windows_that_end_in_a_termination(store):
    from simworld.data.windows import WindowDataset
    from simworld.train.common import batch_for_step, terminal_windows

    ds = WindowDataset(store, 4)
    terminal = terminal_windows(ds)
    assert len(terminal) > 0, "the fixture store should hold terminated episodes"
    for i in terminal:
        assert ds[int(i)]["terminated"][-1]
    batch = batch_for_step(ds, 8, seed=0, step=3, terminal=terminal, terminal_fraction=1.0)
    assert batch["terminated"][:, -1].all()
    plain = batch_for_step(ds, 8, seed=0, step=3)
    again = batch_for_step(ds, 8, seed=0, step=3, terminal=terminal, terminal_fraction=0.0)
    assert (plain["frames"] == again["frames"]).all()  # off means the very same data as before


def test_start_bank_can_begin_where_real_episodes_begin(store):
    """A share of the dream's starts can be real episode beginnings (the states the real world is
    evaluated from); 0 draws the very same bank as before the option existed."""
    from simworld.train.world_model import start_bank

    ids = list(store.lengths)
    plain = start_bank(store, ids, size=20, frames=3, seed=0)
    assert (plain["start"] == 0).sum() < 10  # uniform windows: episode beginnings are rare
    half = start_bank(store, ids, size=20, frames=3, seed=0, episode_starts=0.5)
    assert (half["start"] == 0).sum() == min(10, len(ids)) and len(half["start"]) == 20
    assert len(set(zip(half["episode"], half["start"], strict=True))) == 20  # no window twice
    rng = np.random.default_rng([0, 0xBA4C])
    old = np.sort(rng.choice(len(WindowDataset(store, 3, episode_ids=ids)), size=20, replace=False))
    ds = WindowDataset(store, 3, episode_ids=ids)
    np.testing.assert_array_equal(plain["start"], ds.starts[old])
    with pytest.raises(ValueError, match="bank_episode_starts"):
        start_bank(store, ids, size=20, frames=3, seed=0, episode_starts=1.5)


def test_reward_oversampling_draws_windows_that_end_in_a_reward(store):
    from simworld.data.windows import WindowDataset
    from simworld.train.common import batch_for_step, reward_windows

    ds = WindowDataset(store, 4)
    rewarded = reward_windows(ds)
    every = [i for i in range(len(ds)) if ds[i]["rewards"][-1] != 0]
    assert rewarded.tolist() == every and len(every) > 0, "the fixture store should hold paddle hits"
    batch = batch_for_step(ds, 8, seed=0, step=3, rewarded=rewarded, reward_fraction=1.0)
    assert (batch["rewards"][:, -1] != 0).all()


def test_motion_weighting_makes_errors_on_moving_things_count_more():
    from simworld.diffusion.edm import Precond, diffusion_losses, motion_weights

    clean = torch.zeros(1, 2, 4, 8, 8)
    clean[0, 1, :, 2, 3] = 1.0  # something appears at (2, 3) in the second frame
    w = motion_weights(clean, weight=9.0, scale=0.5)
    assert w.shape == (1, 2, 1, 8, 8)
    assert torch.all(w[0, 0] == 1.0)  # the first frame has no previous one
    assert w[0, 1, 0, 2, 3] == 10.0 and w[0, 1, 0].sum() == 63 + 10
    one = torch.ones(())
    pre = Precond(c_skip=0 * one, c_out=one, c_in=one, c_noise=one)
    on_mover, on_background = torch.zeros_like(clean), torch.zeros_like(clean)
    on_mover[0, 1, :, 2, 3] = 1.0
    on_background[0, 1, :, 5, 5] = 1.0
    loss_mover = diffusion_losses(clean + on_mover, clean, clean, pre, w)[0, 1]
    loss_background = diffusion_losses(clean + on_background, clean, clean, pre, w)[0, 1]
    assert loss_mover == pytest.approx(10 * loss_background)
    # without weights it is the plain mean
    plain = diffusion_losses(clean + on_mover, clean, clean, pre)[0, 1]
    assert plain == pytest.approx(diffusion_losses(clean + on_background, clean, clean, pre)[0, 1])
    assert plain == pytest.approx(1 / 64)


def test_an_untrained_residual_model_keeps_the_last_frame_instead_of_fading(store):
    """Residual denoising predicts the change from the last frame: with nothing learned the scene stays."""
    ep = store.load(0)
    frames, actions = ep.frames[None, :3], ep.actions[None, :2]
    held = {}
    for residual in (False, True):
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig(dynamics=TINY, diffusion={"residual": residual})).eval()
        with torch.no_grad():
            model.dynamics.patch_out.weight.zero_()  # F = 0: a model that has learned nothing
            model.dynamics.patch_out.bias.zero_()
        state = model.reset(frames, actions, generator=torch.Generator().manual_seed(0))
        out, *_ = model.step(state, ep.actions[None, 2])
        held[residual] = psnr_uint8(out, frames[:, -1])[0]
    assert held[True] > 30 > held[False], held


@pytest.mark.parametrize(
    "recipe", [{"residual": True}, {"dense_targets": True}, {"dense_targets": True, "residual": True}]
)
def test_a_model_trains_with_an_opt_in_recipe_and_keeps_its_setting(store, tmp_path, recipe):
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(dynamics=TINY, diffusion=recipe, reward_model={}))
    batch = batch_for_step(WindowDataset(store, 4), 4, seed=0, step=0)
    loss, logs = model(batch)
    loss.backward()
    assert np.isfinite(logs["train/denoise"]) and model.dynamics.patch_out.weight.grad.abs().sum() > 0
    assert model.dynamics.term_head[-1].weight.grad.abs().sum() > 0  # the heads learn too
    model.save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(tmp_path / "m").diffusion
    assert all(getattr(loaded, k) == v for k, v in recipe.items())


def test_dense_targets_learn_from_every_frame_after_the_first(store):
    """A teacher-forced window trains its last frame only; a dense one every frame but the first."""
    batch = batch_for_step(WindowDataset(store, 4), 2, seed=0, step=0)
    for dense, learns in ((False, [False, False, False, True]), (True, [False, True, True, True])):
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig(dynamics=TINY, diffusion={"dense_targets": dense}))
        model.diffusion.teacher_forcing = 1.0
        seen = {}
        forward = model.dynamics.forward_dense if dense else model.dynamics.forward

        def spy(*args, _forward=forward, _seen=seen, **kw):
            out, reward, term = _forward(*args, **kw)
            out.retain_grad()
            _seen["out"] = out
            return out, reward, term

        setattr(model.dynamics, "forward_dense" if dense else "forward", spy)
        model(batch)[0].backward()
        grad = seen["out"].grad[:, -4:]  # the targets: the noisy copies when dense
        assert [bool(grad[:, i].abs().sum() > 0) for i in range(4)] == learns


def test_eval_model_writes_its_scores_and_a_real_vs_imagined_filmstrip(store, tmp_path):
    import matplotlib.image

    from simworld.evaluate import run_eval

    tiny_model().save_pretrained(tmp_path / "m")
    cfg = EvalConfig(
        model=str(tmp_path / "m"), store=str(store.root), horizons=[1, 6], episodes=3, val_fraction=0.5,
        filmstrip=2, out=str(tmp_path / "eval" / "eval.json"), progress=False, action_guidance=0.5,
    )  # fmt: skip
    run_eval(cfg)
    scores = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert "psnr@6" in scores and scores["action_guidance"] == 0.5  # the sampling it was scored with
    image = matplotlib.image.imread(tmp_path / "eval" / "filmstrip.png")
    # 2 rollouts x (real row + imagined row) of 64 px + a 2 px line between, steps 3 and 6, drawn 2x
    assert image.shape[:2] == ((2 * 2 * 64 + 2) * 2, 2 * 64 * 2)


def test_python_api_trains_with_the_cli_optimiser():
    """TrainConfig() and `simworld train` (configs/train.yaml) use the same optimiser: a script that
    builds TrainConfig itself must not train at another learning rate (the loop did, sessions 4-19)."""
    from pathlib import Path

    import yaml

    train = yaml.safe_load((Path(__file__).parents[1] / "configs" / "train.yaml").read_text())
    keys = ("lr", "warmup", "weight_decay", "grad_clip", "ema_decay")
    assert {k: getattr(TrainConfig(), k) for k in keys} == {k: train[k] for k in keys}


def test_mirroring_flips_half_the_windows_and_maps_their_actions(store):
    batch = batch_for_step(WindowDataset(store, 4), 64, seed=0, step=0)
    out = mirror_batch(batch, [2, 1, 0], np.random.default_rng(0))  # Balls: left <-> right, stay
    flipped = (out["frames"] != batch["frames"]).flatten(1).any(1)
    assert 16 < int(flipped.sum()) < 48  # about half
    torch.testing.assert_close(out["frames"][flipped], batch["frames"][flipped].flip(-2))
    torch.testing.assert_close(out["actions"][flipped], 2 - batch["actions"][flipped])
    torch.testing.assert_close(out["frames"][~flipped], batch["frames"][~flipped])
    torch.testing.assert_close(out["actions"][~flipped], batch["actions"][~flipped])
    torch.testing.assert_close(out["rewards"], batch["rewards"])  # a mirror image pays the same


def test_a_flipped_cartpole_frame_is_the_mirrored_state_so_mirror_actions_1_0_fits():
    import gymnasium as gym

    import envs  # noqa: F401 - registers the worlds

    env = gym.make("simworld/PixelCartPole-v1", env_id="CartPole-v1", frame_size=(64, 64)).unwrapped
    env.reset(seed=0)
    for x, theta in [(0.5, 0.1), (-1.2, 0.05), (1.8, -0.15)]:
        frame = env.set_state({"sim": np.array([x, 0.3, theta, -0.2])})
        mirror = env.set_state({"sim": np.array([-x, -0.3, -theta, 0.2])})
        flipped = np.abs(frame[:, ::-1].astype(int) - mirror)
        assert np.mean(flipped > 0) < 0.01, "mirror images differ beyond the renderer's rounding"
        assert np.abs(frame.astype(int) - mirror).mean() > 10 * flipped.mean()  # the states do differ


def test_mirror_actions_must_permute_a_discrete_action_space(store, tmp_path):
    common = dict(store=str(store.root), out=str(tmp_path), dynamics=TINY, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"mirror_actions \[0, 0, 1\] is not a permutation"):
        train_world_model(TrainConfig(mirror_actions=[0, 0, 1], **common))
    assert not (tmp_path / "checkpoint").exists()  # refused before any training


def test_training_with_mirror_actions_sees_the_mirrored_windows(store, tmp_path, monkeypatch):
    import simworld.train.world_model as tw

    seen = []
    monkeypatch.setattr(tw, "mirror_batch", lambda b, *a: seen.append(a[0]) or mirror_batch(b, *a))
    common = dict(store=str(store.root), dynamics=TINY, window=4, batch_size=4, steps=2, progress=False)
    train_world_model(TrainConfig(out=str(tmp_path / "a"), mirror_actions=[2, 1, 0], **common))
    assert seen == [[2, 1, 0]] * 2  # every step's batch
    train_world_model(TrainConfig(out=str(tmp_path / "b"), **common))
    assert len(seen) == 2  # off by default


def test_a_diverging_model_keeps_its_latents_within_what_a_frame_can_hold(store):
    """A model whose outputs run away (here: a large random output layer) must not feed out-of-range
    latents back into its context until they overflow: a long rollout stays finite."""
    model = tiny_model().eval()
    with torch.no_grad():
        model.dynamics.patch_out.weight.normal_(0.0, 100.0)  # (zero at init, as DiT)
    ep = store.load(0)
    state = model.reset(ep.frames[None, :3], ep.actions[None, :2], generator=torch.Generator().manual_seed(0))
    lo, hi = ((v - model.cfg.latent_shift) / model.cfg.latent_scale for v in (-1.0, 1.0))
    for _ in range(6):
        _, latent, reward, prob = model.step(state, np.array([1]))
        assert np.isfinite(reward).all() and np.isfinite(prob).all()
    assert latent.min() >= min(lo, hi) - 1e-6 and latent.max() <= max(lo, hi) + 1e-6
    assert latent.abs().max() >= 0.99 * max(abs(lo), abs(hi))  # it did run away, to the clip
