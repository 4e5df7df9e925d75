import pytest
import torch

from simworld.diffusion.edm import DiffusionConfig, sample_dense_sigmas, sample_training_sigmas


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_sigma_max_fraction_trains_the_level_sampling_starts_from(fraction):
    torch.manual_seed(0)
    cfg = DiffusionConfig(sigma_max=80.0, sigma_max_fraction=fraction, teacher_forcing=1.0)
    sigma, weight = sample_training_sigmas(4096, 6, cfg, torch.device("cpu"))
    last = sigma[:, -1]
    at_top = (last == cfg.sigma_max).float().mean().item()
    assert at_top == pytest.approx(fraction, abs=0.03)
    # the context of a teacher-forced window stays clean: the fraction only moves target frames
    assert sigma[:, :-1].max() <= cfg.sigma_min + cfg.context_sigma_max
    assert (weight[:, -1] == 1).all() and (weight[:, :-1] == 0).all()
    _, dense_target = sample_dense_sigmas(4096, 6, cfg, torch.device("cpu"))
    assert (dense_target == cfg.sigma_max).float().mean().item() == pytest.approx(fraction, abs=0.03)
