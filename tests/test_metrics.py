import math

import numpy as np
import pytest
import torch

from simworld.metrics import (
    foreground_mask,
    object_recall_uint8,
    psnr,
    psnr_masked_uint8,
    psnr_uint8,
    ssim,
    ssim_uint8,
)


def random_frames(shape=(2, 3, 32, 32, 3), lo=0, hi=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.uint8)


def test_identical_images_give_inf_psnr_and_unit_ssim():
    a = random_frames()
    assert np.isinf(psnr_uint8(a, a)).all()
    np.testing.assert_allclose(ssim_uint8(a, a), 1.0, atol=1e-12)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x, 2.0)).all()
    torch.testing.assert_close(ssim(x, x, 2.0), torch.ones(4))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_constant_offset_psnr_is_known(k):
    a = random_frames(lo=30, hi=220)
    b = a + np.uint8(k)
    expected = 20 * math.log10(255 / k)
    np.testing.assert_allclose(psnr_uint8(a, b), expected, rtol=1e-9)
    x = torch.from_numpy(a).movedim(-1, -3).float()
    np.testing.assert_allclose(psnr(x, x + k, 255.0).numpy(), expected, rtol=1e-5)


def test_ssim_of_constant_images_is_known():
    # No variance anywhere, so SSIM reduces to its luminance term.
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)
    np.testing.assert_allclose(ssim_uint8(a, b), expected, rtol=1e-9)


def test_ssim_falls_as_noise_grows():
    rng = np.random.default_rng(0)
    base = np.zeros((48, 48, 3), np.uint8)
    base[10:30, 12:40] = (200, 40, 40)
    scores = []
    for sigma in (2, 10, 40):
        noisy = np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)
        scores.append(float(ssim_uint8(base, noisy)))
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_metrics_are_symmetric_and_keep_leading_dims():
    a, b = random_frames(seed=1), random_frames(seed=2)
    assert psnr_uint8(a, b).shape == (2, 3) and ssim_uint8(a, b).shape == (2, 3)
    np.testing.assert_allclose(psnr_uint8(a, b), psnr_uint8(b, a))
    np.testing.assert_allclose(ssim_uint8(a, b), ssim_uint8(b, a), rtol=1e-12)


def test_images_smaller_than_the_window_work():
    a, b = random_frames((6, 6, 3), seed=1), random_frames((6, 6, 3), seed=2)
    assert np.isfinite(ssim_uint8(a, b)) and ssim_uint8(a, b) < 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        psnr_uint8(random_frames((8, 8, 3)), random_frames((8, 9, 3)))
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9), 1.0)


def test_foreground_mask_covers_objects_and_their_edges():
    f = np.zeros((1, 16, 16, 3), np.uint8)
    f[0, 6:9, 6:9] = (255, 40, 40)
    m = foreground_mask(f)
    assert m.shape == (1, 16, 16)
    assert m[0, 5:10, 5:10].all() and m.sum() == 25
    assert torch.equal(foreground_mask(torch.from_numpy(f)), torch.from_numpy(m))
    g = f.copy()
    g[0, 0, 0] = 50  # a background error is outside the mask
    assert psnr_masked_uint8(f, g, m) == math.inf
    g[0, 7, 7] = (245, 40, 40)
    assert psnr_masked_uint8(f, g, m) == pytest.approx(10 * math.log10(255**2 / (100 / 75)))


def test_object_recall_tells_faded_moved_and_kept_objects_apart():
    true = np.full((2, 32, 32, 3), 30, np.uint8)  # grey background, a red ball, a white bar
    true[:, 4:10, 4:10] = (230, 30, 30)
    true[:, 28:30, 8:24] = 255
    kept, ghost = object_recall_uint8(true, true)
    np.testing.assert_allclose(kept, 1.0)
    np.testing.assert_allclose(ghost, 0.0)
    faded, ghost = object_recall_uint8(np.full_like(true, 30), true)  # the background alone
    np.testing.assert_allclose(faded, 0.0)
    np.testing.assert_allclose(ghost, 0.0)
    half = true.copy()
    half[:, 4:10, 4:10] = (130, 30, 30)  # the ball at half its contrast
    kept, _ = object_recall_uint8(half, true)
    ball, bar = 36 * 200, 32 * 225
    np.testing.assert_allclose(kept, (ball / 2 + bar) / (ball + bar))
    moved = true.copy()
    moved[:, 4:10, 4:10] = 30
    moved[:, 14:20, 14:20] = (230, 30, 30)  # left behind where the truth has none
    kept, ghost = object_recall_uint8(moved, true)
    np.testing.assert_allclose(kept, bar / (ball + bar))
    np.testing.assert_allclose(ghost, ball / (ball + bar))
    noisy = true + np.random.default_rng(0).integers(0, 8, true.shape).astype(np.uint8)  # faint noise
    np.testing.assert_allclose(object_recall_uint8(noisy, true)[1], 0.0)
    with pytest.raises(ValueError, match="shape"):
        object_recall_uint8(true[:, :16], true)
