"""Do the probes earn trust? ROC-AUC of every probe on matched possible/impossible Balls videos.

``python -m simworld.probes.validate --out docs/probe_validation`` records real Balls clips, breaks
one law in each (see :mod:`simworld.probes.violations`), scores everything with the probes (which
see pixels only) and writes:

- ``results.json``: the AUC matrix (probe x violation), thresholds, false-positive rates, detection
  rates, the magnitude sweep and the counts behind every number;
- ``thresholds.json``: badness thresholds fixed on held-out real clips (what the wrapper uses);
- ``auc_matrix.png``, ``detectability.png`` and ``README.md`` (the tables in markdown).

Protocol: thresholds are the ``quantile`` of each probe's badness on ``calib`` real clips whose
seeds are disjoint from the ``test`` clips (over the clips with evidence for the probe; a clip with
none, e.g. no collision for the conservation probes, counts as badness 0 everywhere else). Negatives for the no-ground-truth probes are the real
test clips; for the ground-truth probes they are *possible* twins (the same clip re-simulated from a
start moved by 1e-3 units) compared with the real clip, so chaos is not mistaken for a violation.
Positives are the violated clips, compared with the real clip where a probe needs ground truth.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simworld.probes.suite import LAW_PROBES, PROBES, badness, score_video, violation_from_badness
from simworld.probes.violations import MATRIX_VIOLATIONS, VIOLATIONS, Clip, jitter, make_balls, record_clip
from simworld.probes.world import WorldSpec

TARGET_AUC, TARGET_FPR = 0.95, 0.05
SUITE = "law_suite"  # pseudo-probe: max over law probes of badness / threshold


@dataclass
class ValidationConfig:
    """Sizes of the validation run.

    Attributes:
        out: output folder.
        test: real clips whose violated twins are scored (seeds ``0..test-1``).
        calib: held-out real clips that fix the thresholds (seeds ``100000 + i``).
        sweep: clips per magnitude in the detectability sweep (the first ``sweep`` test clips; 0: none).
        frames: frames per clip (15 fps).
        quantile: thresholds are this quantile of the held-out badness.
    """

    out: str = "docs/probe_validation"
    test: int = 60
    calib: int = 60
    sweep: int = 30
    frames: int = 48
    quantile: float = 0.99


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC of a score where larger means positive: ``P(pos > neg) + P(pos == neg) / 2``."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return math.nan
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _rng(*key: Any) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in key])


def _bad(scores: dict[str, float]) -> dict[str, float]:
    """Badness of every probe, ``nan`` where the video held no evidence for it."""
    return {p: badness(p, v) if math.isfinite(v := scores.get(p, math.nan)) else math.nan for p in PROBES}


def _threshold(values: list[float], q: float) -> float:
    """The ``q`` quantile over the clips that had evidence (a probe with sparse evidence, like momentum
    at collisions, would otherwise get a threshold of ~0 from the many clips without any)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.quantile(v, q)) if len(v) else 0.0


def _zero(b: dict[str, float]) -> dict[str, float]:
    """No evidence counts as nothing wrong."""
    return {k: 0.0 if math.isnan(v) else v for k, v in b.items()}


class _Scorer:
    """Scores clips and their twins, with one Balls env for re-rendering."""

    def __init__(self, cfg: ValidationConfig) -> None:
        self.cfg = cfg
        self.env = make_balls()
        self.spec = WorldSpec.from_env(self.env)
        self.clips: dict[int, Clip] = {}

    def clip(self, seed: int) -> Clip:
        if seed not in self.clips:
            self.clips[seed] = record_clip(seed, self.cfg.frames)
        return self.clips[seed]

    def real(self, seed: int) -> dict[str, float]:
        """Badness of a real clip (law probes) and of its possible twin against it (comparison probes)."""
        clip = self.clip(seed)
        twin = jitter(clip, self.env, _rng(seed, "jitter"))
        law = _bad(score_video(clip.frames, self.spec))
        ref = _bad(score_video(twin.frames, self.spec, reference=clip.frames))
        return {p: ref[p] if PROBES[p].reference else law[p] for p in PROBES}

    def violated(self, seed: int, name: str, magnitude: float) -> dict[str, float] | None:
        clip = self.clip(seed)
        v = VIOLATIONS[name]
        bad = v.make(clip, self.env, _rng(seed, name, magnitude), magnitude)
        return None if bad is None else _bad(score_video(bad.frames, self.spec, reference=clip.frames))


def run_validation(cfg: ValidationConfig, log: Any = print) -> dict[str, Any]:
    """Run the whole protocol and write the outputs; returns what ``results.json`` holds."""
    t_start = time.perf_counter()
    s = _Scorer(cfg)
    probes = list(PROBES)
    calib = [s.real(100_000 + i) for i in range(cfg.calib)]
    thresholds = {p: _threshold([c[p] for c in calib], cfg.quantile) for p in probes}
    calib = [_zero(c) for c in calib]
    # the whole suite as one detector: the worst law probe relative to its threshold
    suite = lambda b: violation_from_badness(b, thresholds)  # noqa: E731
    thresholds[SUITE] = float(np.quantile([suite(c) for c in calib], cfg.quantile))
    probes.append(SUITE)
    log(f"thresholds from {cfg.calib} held-out real clips ({time.perf_counter() - t_start:.0f} s)")

    def scored(b: dict[str, float] | None) -> dict[str, float] | None:
        return None if b is None else {**_zero(b), SUITE: suite(_zero(b))}

    seeds = list(range(cfg.test))
    neg = [scored(s.real(i)) for i in seeds]
    fpr = {p: float(np.mean([n[p] > thresholds[p] for n in neg])) for p in probes}
    matrix: dict[str, dict[str, float]] = {p: {} for p in probes}
    tpr: dict[str, dict[str, float]] = {p: {} for p in probes}
    counts: dict[str, int] = {}
    for name in MATRIX_VIOLATIONS:
        v = VIOLATIONS[name]
        pos = [b for i in seeds if (b := scored(s.violated(i, name, v.magnitude))) is not None]
        counts[name] = len(pos)
        for p in probes:
            matrix[p][name] = auc([b[p] for b in pos], [n[p] for n in neg])
            tpr[p][name] = float(np.mean([b[p] > thresholds[p] for b in pos])) if pos else math.nan
        log(f"{name}: {len(pos)} pairs, best AUC {max(matrix[p][name] for p in probes):.3f}")

    sweep: dict[str, dict[str, Any]] = {}
    sweep_seeds = seeds[: cfg.sweep]
    for name, v in VIOLATIONS.items():
        if not v.sweep or not sweep_seeds:
            continue
        rows = []
        for m in v.sweep:
            pos = [b for i in sweep_seeds if (b := scored(s.violated(i, name, m))) is not None]
            aucs = {p: auc([b[p] for b in pos], [neg[i][p] for i in sweep_seeds]) for p in probes}
            best = max(aucs, key=lambda p: -1.0 if math.isnan(aucs[p]) else aucs[p])
            rows.append(
                {"magnitude": m, "n": len(pos), "best_probe": best, "best_auc": aucs[best], "auc": aucs}
            )
        sweep[name] = {"unit": v.unit, "rows": rows}
        log(f"sweep {name}: " + ", ".join(f"{r['magnitude']:g}->{r['best_auc']:.2f}" for r in rows))

    summary = {}
    for name in MATRIX_VIOLATIONS:
        ok = [p for p in probes if matrix[p][name] >= TARGET_AUC and fpr[p] <= TARGET_FPR]
        best = max(probes, key=lambda p: matrix[p][name] if not math.isnan(matrix[p][name]) else -1)
        summary[name] = {
            "magnitude": VIOLATIONS[name].magnitude,
            "unit": VIOLATIONS[name].unit,
            "best_probe": best,
            "best_auc": matrix[best][name],
            "probes_meeting_target": ok,
            "target_met": bool(ok),
        }
    any_fpr = float(np.mean([any(n[p] > thresholds[p] for p in LAW_PROBES) for n in neg]))
    results = {
        "config": asdict(cfg),
        "target": {"auc": TARGET_AUC, "fpr": TARGET_FPR},
        "thresholds": thresholds,
        "fpr": fpr,
        "fpr_any_law_probe": any_fpr,
        "auc": matrix,
        "tpr": tpr,
        "pairs": counts,
        "summary": summary,
        "sweep": sweep,
        "seconds": time.perf_counter() - t_start,
    }
    _write(results, Path(cfg.out))
    log(f"wrote {cfg.out} in {results['seconds']:.0f} s")
    return results


def _write(results: dict[str, Any], out: Path) -> None:
    from simworld.probes.report import auc_heatmap, detectability_plot, validation_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=True))
    (out / "thresholds.json").write_text(json.dumps(results["thresholds"], indent=1))
    auc_heatmap(out / "auc_matrix.png", results["auc"], list(results["pairs"]))
    detectability_plot(out / "detectability.png", results["sweep"])
    (out / "README.md").write_text(validation_markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f, default in asdict(ValidationConfig()).items():
        parser.add_argument(f"--{f}", type=type(default), default=default)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # SSIM runs in torch; one core is plenty and leaves the rest free
    run_validation(ValidationConfig(**vars(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
