import pytest
import torch

from simworld.models.dit import DiT, DynamicsConfig
from simworld.models.kv_cache import KVCache


def tiny(context=4, action_space=None, **kw):
    torch.manual_seed(0)
    cfg = DynamicsConfig(latent_channels=4, patch_size=2, size="tiny", context=context, **kw)
    if action_space:
        cfg.action_space = action_space
    model = DiT(cfg).eval()
    # adaLN-Zero starts every block as the identity; randomise so the tests exercise real attention
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def inputs(b=2, t=6, h=8, w=6, discrete=True):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, t, 4, h, w, generator=g)
    c_noise = torch.randn(b, t, generator=g)
    actions = torch.randint(0, 3, (b, t), generator=g) if discrete else torch.randn(b, t, 2, generator=g)
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[:, 0] = False
    return x, c_noise, actions, valid


ATTENTION = ["block_causal", "factorised"]
LOCAL = {"local_layers": 2, "local_channels": 8, "local_features": 3}  # a small local head


def new_cache(model, batch=2, grid=(4, 3), context=3):
    cfg = model.cfg
    return KVCache(model.cache_layers, batch, cfg.heads, cfg.dim // cfg.heads, grid, context=context)


@pytest.mark.parametrize("attention", ATTENTION)
def test_shapes(attention):
    model = tiny(attention=attention)
    x, c, a, v = inputs()
    out, reward, term = model(x, c, a, v)
    assert out.shape == x.shape and reward.shape == (2, 6) and term.shape == (2, 6)


@pytest.mark.parametrize("attention", ATTENTION)
def test_later_frames_do_not_change_earlier_predictions(attention):
    model = tiny(context=8, attention=attention)
    x, c, a, v = inputs()
    out, reward, _ = model(x, c, a, v)
    x2, a2 = x.clone(), a.clone()
    x2[:, 3:] += torch.randn_like(x2[:, 3:])
    a2[:, 3:] = (a2[:, 3:] + 1) % 3
    out2, reward2, _ = model(x2, c, a2, v)
    torch.testing.assert_close(out2[:, :3], out[:, :3])
    torch.testing.assert_close(reward2[:, :3], reward[:, :3])
    assert not torch.allclose(out2[:, 3:], out[:, 3:])


@pytest.mark.parametrize(
    "discrete,attention,prev_frames,local",
    [
        (True, "block_causal", 1, {}),
        (False, "block_causal", 1, {}),
        (True, "factorised", 1, {}),
        (True, "factorised", 2, {}),
        (True, "factorised", 2, LOCAL),
        (True, "factorised", 1, {"prev_actions": 2}),
        (False, "factorised", 2, {"prev_actions": 1, **LOCAL}),
    ],
)
def test_kv_cache_matches_full_forward_beyond_the_window(discrete, attention, prev_frames, local):
    space = None if discrete else {"type": "Box", "shape": [2], "low": [-1, -1], "high": [1, 1]}
    model = tiny(context=3, action_space=space, attention=attention, prev_frames=prev_frames, **local)
    x, c, a, v = inputs(t=7, discrete=discrete)
    full, full_r, full_t = model(x, c, a, v)
    cache = new_cache(model)
    for t in range(7):
        out, r, term = model.forward_cached(
            x[:, t : t + 1], c[:, t : t + 1], a[:, t : t + 1], v[:, t : t + 1], cache, write=True
        )
        torch.testing.assert_close(out[:, 0], full[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r[:, 0], full_r[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(term[:, 0], full_t[:, t], atol=1e-5, rtol=1e-4)


def test_cache_reset_of_one_element_leaves_the_other():
    model = tiny(context=3)
    x, c, a, v = inputs(t=4)
    cache = new_cache(model)
    for t in range(3):
        model.forward_cached(
            x[:, t : t + 1], c[:, t : t + 1], a[:, t : t + 1], v[:, t : t + 1], cache, write=True
        )
    cache.reset(torch.tensor([True, False]))
    out, *_ = model.forward_cached(x[:, 3:4], c[:, 3:4], a[:, 3:4], v[:, 3:4], cache)
    alone, *_ = model(x[:1, 3:4], c[:1, 3:4], a[:1, 3:4], v[:1, 3:4])
    torch.testing.assert_close(out[:1], alone, atol=1e-5, rtol=1e-4)
    full, *_ = model(x[1:], c[1:], a[1:], v[1:])
    torch.testing.assert_close(out[1:, 0], full[:, 3], atol=1e-5, rtol=1e-4)


def test_factorised_attention_is_spatial_then_temporal():
    model = tiny(attention="factorised", depth=4)
    assert [b.kind for b in model.blocks] == ["spatial", "temporal", "spatial", "temporal"]
    assert model.cache_layers == 2  # spatial blocks keep nothing from the past
    with pytest.raises(ValueError, match="unknown attention"):
        DynamicsConfig(attention="axial")


def _step_both(model, x, c, a, v, steps):
    """Per-step outputs of the cached path and of the cache-free window recomputation."""
    cached, window = new_cache(model), new_cache(model)
    outs = []
    for t in range(steps):
        args = (x[:, t : t + 1], c[:, t : t + 1], a[:, t : t + 1], v[:, t : t + 1])
        outs.append(
            (model.forward_cached(*args, cached, write=True), model.forward_window(*args, window, write=True))
        )
    return outs


@pytest.mark.parametrize(
    "attention,prev_actions", [("block_causal", 0), ("factorised", 0), ("factorised", 2)]
)
def test_window_recompute_matches_the_cache_while_the_window_holds_everything(attention, prev_actions):
    model = tiny(context=3, attention=attention, prev_actions=prev_actions)
    x, c, a, v = inputs(t=3)
    for (out, r, term), (out2, r2, term2) in _step_both(model, x, c, a, v, 3):
        torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r2, r, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(term2, term, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prev_actions", [0, 1])
def test_window_recompute_matches_a_one_layer_cache_beyond_the_window(prev_actions):
    # with one layer a cached key depends on its own frame only, so the two paths agree at any step
    # (with prev_actions < context - 1: the window's oldest frame still has its earlier actions)
    model = tiny(context=3, depth=1, prev_actions=prev_actions)
    x, c, a, v = inputs(t=7)
    for (out, r, _), (out2, r2, _) in _step_both(model, x, c, a, v, 7):
        torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r2, r, atol=1e-5, rtol=1e-4)


def test_written_out_attention_matches_the_fused_kernel():
    from simworld.models.dit import set_attention_impl

    model = tiny(context=3)
    x, c, a, v = inputs(t=5)
    fused = model(x, c, a, v)[0]
    set_attention_impl("math")
    try:
        written = model(x, c, a, v)[0]
    finally:
        set_attention_impl("sdpa")
    torch.testing.assert_close(written, fused, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        set_attention_impl("flash")


@pytest.mark.parametrize(
    "attention,prev_frames,local",
    [
        ("block_causal", 1, {}),
        ("factorised", 1, {}),
        ("factorised", 3, {}),
        ("factorised", 2, LOCAL),
        ("factorised", 2, {"prev_actions": 2}),
    ],
)
def test_dense_targets_see_what_a_rollout_step_sees(attention, prev_frames, local):
    """Each noisy copy of a dense window gets the output a rollout's new frame gets from the same
    context (through the KV cache), also once the window is longer than the context."""
    model = tiny(context=3, attention=attention, prev_frames=prev_frames, **local)
    ctx, c, a, v = inputs(t=6)
    noisy, noisy_c, _, _ = inputs(t=6, h=8, w=6)
    noisy, noisy_c = noisy.flip(0), noisy_c.flip(0)  # other values than the context
    out, reward, term = model.forward_dense(ctx, c, noisy, noisy_c, a, v)
    assert out.shape == (2, 12, 4, 8, 6) and reward.shape == term.shape == (2, 12)
    cache = new_cache(model)
    for t in range(6):
        step = (slice(None), slice(t, t + 1))
        new, _, _ = model.forward_cached(noisy[step], noisy_c[step], a[step], v[step], cache)
        torch.testing.assert_close(new[:, 0], out[:, 6 + t], atol=1e-5, rtol=1e-4)
        held, r, term_t = model.forward_cached(ctx[step], c[step], a[step], v[step], cache, write=True)
        torch.testing.assert_close(held[:, 0], out[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r[:, 0], reward[:, t], atol=1e-5, rtol=1e-4)


def test_patches_carry_as_many_previous_frames_as_configured():
    """With prev_frames=2 a frame's output depends on the frame two back even where attention
    cannot reach it (context 1: no temporal attention at all); with 1 it does not."""
    for prev_frames, reaches in ((1, False), (2, True)):
        model = tiny(context=2, attention="factorised", prev_frames=prev_frames)
        model.cfg.context = 1  # attention sees the frame itself only; the patches carry the past
        x, c, a, v = inputs(t=4)
        out = model(x, c, a, v)[0]
        x2 = x.clone()
        x2[:, 1] += 1.0  # two frames before frame 3
        changed = not torch.allclose(model(x2, c, a, v)[0][:, 3], out[:, 3])
        assert changed == reaches
    with pytest.raises(ValueError, match="prev_frames"):
        DynamicsConfig(context=2, prev_frames=3)


def test_prev_actions_condition_a_frame_on_the_actions_before_its_own():
    """CartPole shows a push only in the frame after next: with prev_actions=1 a frame's output
    depends on the action before its own even where attention cannot reach that frame; with 0 it
    does not. The first frame of a sequence has no earlier action ('none')."""
    for prev_actions, reaches in ((0, False), (1, True)):
        model = tiny(context=2, attention="factorised", prev_actions=prev_actions)
        model.cfg.context = 1  # attention sees the frame itself only
        x, c, a, v = inputs(t=4)
        out = model(x, c, a, v)[0]
        a2 = a.clone()
        a2[:, 2] = (a2[:, 2] + 1) % 3  # the action that led to frame 2
        changed = model(x, c, a2, v)[0]
        assert not torch.allclose(changed[:, 2], out[:, 2])  # its own action always counts
        assert (not torch.allclose(changed[:, 3], out[:, 3])) == reaches
    with pytest.raises(ValueError, match="prev_actions"):
        DynamicsConfig(context=2, prev_actions=2)


def test_local_head_starts_as_the_plain_transformer():
    """A fresh local head adds nothing: training starts from what the plain DiT computes."""
    x, c, a, v = inputs(t=4)
    torch.manual_seed(0)
    plain = DiT(DynamicsConfig(latent_channels=4, size="tiny", context=2, attention="factorised"))
    torch.manual_seed(0)
    local = DiT(DynamicsConfig(latent_channels=4, size="tiny", context=2, attention="factorised", **LOCAL))
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for p, q in zip(plain.parameters(), local.parameters(), strict=False):  # the shared ones come first
            q.copy_(p)
    torch.testing.assert_close(local(x, c, a, v)[0], plain(x, c, a, v)[0])
    with torch.no_grad():
        for p in local.local_head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert not torch.allclose(local(x, c, a, v)[0], plain(x, c, a, v)[0])
    with pytest.raises(ValueError, match="multiple of 8"):
        DynamicsConfig(local_layers=2, local_channels=12)
