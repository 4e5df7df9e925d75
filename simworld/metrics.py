"""Image-quality metrics: PSNR and SSIM, on torch tensors ``(..., 3, H, W)`` or uint8 frames ``(..., H, W, 3)``.

Every function returns one value per image (the leading dimensions are kept), so callers choose how
to average over frames, episodes or batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_K1, _K2 = 0.01, 0.03  # SSIM stabilisers (Wang et al. 2004)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"metrics need tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 3:
        raise ValueError(f"metrics need images (..., C, H, W), got shape {tuple(a.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image.

    Args:
        a: Images ``(..., C, H, W)``.
        b: Images of the same shape.
        data_range: Distance between the largest and smallest possible value (255 for uint8, 2 for
            ``[-1, 1]``).

    Returns:
        ``float (...)``, ``inf`` where two images are identical.
    """
    _check_pair(a, b)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    mse = (a.to(dtype) - b.to(dtype)).square().mean(dim=(-3, -2, -1))  # (...)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity of each image (Gaussian window, averaged over positions and channels).

    The local statistics are computed over the "valid" region only (no padding), as in the original
    implementation. Images smaller than the window use a window as large as the smaller side (made
    odd).

    Args:
        a: Images ``(..., C, H, W)``.
        b: Images of the same shape.
        data_range: Distance between the largest and smallest possible value.
        window: Side of the Gaussian window.
        sigma: Standard deviation of the Gaussian window.

    Returns:
        ``float (...)``, 1 where two images are identical.
    """
    _check_pair(a, b)
    lead, (c, h, w) = a.shape[:-3], a.shape[-3:]
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    size = min(window, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    g = _gaussian_window(size, sigma, dtype, a.device)
    x = a.to(dtype).reshape(-1, c, h, w)  # (n, c, h, w)
    y = b.to(dtype).reshape(-1, c, h, w)  # (n, c, h, w)

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, one filter per channel
        z = F.conv2d(z, g.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
        return F.conv2d(z, g.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)  # (n, c, h', w')

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead)  # (...)


def _uint8_pair(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"metrics need arrays of the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"metrics need uint8 frames (..., H, W, 3), got shape {a.shape}")
    to = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64).movedim(-1, -3)  # noqa: E731
    return to(a), to(b)  # (..., 3, H, W) each


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB of each frame of two ``uint8 (..., H, W, 3)`` arrays; returns ``float64 (...)``."""
    x, y = _uint8_pair(a, b)
    return psnr(x, y, 255.0).numpy()


def ssim_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each frame of two ``uint8 (..., H, W, 3)`` arrays; returns ``float64 (...)``."""
    x, y = _uint8_pair(a, b)
    return ssim(x, y, 255.0).numpy()


def foreground_mask(frames: np.ndarray | torch.Tensor, dilate: int = 1) -> np.ndarray | torch.Tensor:
    """Pixels that differ from their frame's most common colour (the background), grown by ``dilate``.

    Our worlds draw small flat objects on a flat background, where whole-frame errors are dominated by
    easy background pixels; these masks let a metric (or a loss) look at the objects.

    Args:
        frames: ``uint8 (..., H, W, 3)``, numpy or torch (any device).
        dilate: Pixels to grow the mask by in every direction, so object edges count.

    Returns:
        ``bool (..., H, W)``, numpy for numpy input, else a tensor on the input's device.
    """
    as_numpy = not torch.is_tensor(frames)
    f = torch.from_numpy(np.ascontiguousarray(frames)) if as_numpy else frames
    lead, (h, w) = f.shape[:-3], f.shape[-3:-1]
    packed, background = _packed_background(f.reshape(-1, h, w, 3))
    mask = packed != background[:, None, None]  # (n, H, W)
    if dilate > 0:
        mask = F.max_pool2d(mask[:, None].float(), 2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0
    mask = mask.reshape(*lead, h, w)
    return mask.numpy() if as_numpy else mask


def object_recall_uint8(
    pred: np.ndarray, true: np.ndarray, visible: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """How much of each true frame's objects a prediction keeps, and how much it paints elsewhere.

    An object pixel's contrast is its largest channel distance from the true frame's background
    (its most common colour). ``recall`` is the share of the true contrast that the prediction
    reproduces at the true object pixels (``min`` of the two contrasts, so a faded object scores
    its remaining brightness); ``ghost`` is the prediction's visible contrast (``>= visible``)
    outside them, per unit of true contrast (an object left where it was, or drawn where none is;
    faint sampling noise does not count). A faded frame scores
    (0, 0), a perfect one (1, 0), the last frame repeated after its objects moved away (0, 1).
    PSNR rewards fading (a blank frame is close to a sparse one); these do not.

    Args:
        pred, true: ``uint8 (..., H, W, 3)``.
        visible: Contrast (of 255) from which a predicted pixel off the objects counts as drawn.

    Returns:
        ``recall, ghost``: ``float64 (...)`` each; frames without objects score recall 1 and ghost 0
        when the prediction has none either (ghost counts pixels of contrast then).
    """
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    t = true.astype(np.int32)
    h, w = t.shape[-3:-1]
    _, packed_bg = _packed_background(torch.from_numpy(np.ascontiguousarray(true)).reshape(-1, h, w, 3))
    bg = torch.stack([(packed_bg >> 16) & 255, (packed_bg >> 8) & 255, packed_bg & 255], -1).numpy()
    bg = bg.reshape(*t.shape[:-3], 1, 1, 3)
    c_true = np.abs(t - bg).max(-1).astype(np.float64)
    c_pred = np.abs(pred.astype(np.int32) - bg).max(-1).astype(np.float64)
    obj = c_true > 0
    total = c_true.sum((-2, -1))
    kept = np.minimum(c_pred, c_true).sum((-2, -1))  # zero off the objects, where c_true is
    shown = c_pred >= visible
    stray = (c_pred * (~obj & shown)).sum((-2, -1))
    empty = total == 0
    recall = np.where(empty, (stray == 0).astype(np.float64), kept / np.maximum(total, 1))
    ghost = np.where(empty, shown.sum((-2, -1)), stray / np.maximum(total, 1))
    return recall, ghost


def _packed_background(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 (n, H, W, 3)`` -> each pixel's colour packed in one int ``(n, H, W)`` and each frame's
    most common packed colour ``(n,)``, its background."""
    f = frames.long()
    packed = (f[..., 0] << 16) | (f[..., 1] << 8) | f[..., 2]
    return packed, packed.flatten(1).mode(dim=-1).values


def psnr_masked_uint8(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB pooled over the masked pixels of all frames (``mask``: ``bool (..., H, W)``).

    Returns ``nan`` for an empty mask and ``inf`` if the masked pixels are identical.
    """
    x, y = _uint8_pair(a, b)
    m = torch.from_numpy(np.asarray(mask)).unsqueeze(-3)  # (..., 1, H, W)
    if m.shape[-2:] != x.shape[-2:] or m.shape[:-3] != x.shape[:-3]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match frames {a.shape}")
    n = int(m.sum()) * x.shape[-3]
    if n == 0:
        return float("nan")
    mse = float(((x - y).square() * m).sum()) / n
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
