"""The validation protocol end to end on a handful of clips, and its ROC-AUC."""

import json

import pytest

from simworld.probes.validate import SUITE, ValidationConfig, auc, run_validation
from simworld.probes.violations import MATRIX_VIOLATIONS


def test_auc_known_answers():
    assert auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    assert auc([2, 0], [1]) == 0.5


def test_tiny_validation_run_writes_everything(tmp_path):
    res = run_validation(
        ValidationConfig(out=str(tmp_path), test=2, calib=2, sweep=0, frames=32), log=lambda *_: None
    )
    assert set(res["pairs"]) == set(MATRIX_VIOLATIONS)
    assert set(res["auc"]["permanence"]) == set(MATRIX_VIOLATIONS) and SUITE in res["auc"]
    # vanishing balls are caught whatever the sample size: real clips keep permanence at exactly 1
    assert res["auc"]["permanence"]["vanish"] == pytest.approx(1.0)
    for name in ("results.json", "thresholds.json", "auc_matrix.png", "detectability.png", "README.md"):
        assert (tmp_path / name).exists()
    assert (
        json.loads((tmp_path / "thresholds.json").read_text())["continuity"]
        == res["thresholds"]["continuity"]
    )
    assert "| violation | magnitude |" in (tmp_path / "README.md").read_text()
