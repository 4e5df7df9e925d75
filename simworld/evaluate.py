"""``simworld eval-model``: open-loop rollouts on held-out episodes with their recorded actions.

Each held-out episode is replayed from a few real context frames near its end, so every rollout
covers the episode's last step: that is where terminations are, and a termination head that never
fires would otherwise look perfect. Frames are compared with the ground truth at fixed horizons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from simworld.data.store import EpisodeStore
from simworld.metrics import object_recall_uint8, psnr_uint8, ssim_uint8
from simworld.plots import filmstrip
from simworld.probes.contacts import agent_contact, agent_gap, floor_contact, floor_spec, floor_steps
from simworld.probes.readout import load_readout, read_pairs
from simworld.world_model import WorldModel

FILMSTRIP_STEPS = 24  # imagined steps drawn in the filmstrip


@dataclass
class EvalConfig:
    model: str = "runs/balls/model"
    store: str = "data/balls"
    episodes: int = 32  # held-out episodes to roll out (all if fewer)
    context: int = 2  # real frames given before imagining
    horizons: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    val_fraction: float = 0.1  # must match training, so the episodes are truly held out
    split_seed: int = 0
    seed: int = 0
    device: str = "cpu"
    steps: int | None = None  # denoising steps per frame (None: the model's default)
    sampler: str | None = None  # euler | heun (None: the model's default)
    warm_start_sigma: float | None = None  # > 0: sample from the previous frame noised to this level
    context_sigma: float | None = None  # the noise each frame is held at as context (None: the model's)
    action_guidance: float | None = None  # > 0: DiffusionConfig.action_guidance (None: the model's)
    out: str | None = None  # JSON path; default <model>/eval.json
    filmstrip: int = 3  # rollouts drawn real-vs-imagined in filmstrip.png beside the JSON (0: none)
    readout: str | None = None  # a `simworld train-readout` folder: also the state error of the rollouts
    progress: bool = True


def _windows(store: EpisodeStore, ids: list[int], context: int, horizon: int, state_key: str | None = None):
    """The held-out windows: the last ``context + horizon`` frames of each episode, padded; with a
    ``state_key`` the store records, also the true state of every frame after the context (else None)."""
    frames, actions, rewards, terms, valid, states = [], [], [], [], [], []
    for eid in ids:
        ep = store.load(eid)
        T = ep.num_steps
        start = max(0, T + 1 - (context + horizon))
        n = min(horizon, T - (start + context - 1))  # imagined steps that have ground truth
        if n < 1:
            continue
        pad = horizon - n
        f = ep.frames[start : start + context + n]
        a = ep.actions[start : start + context - 1 + n]
        frames.append(np.concatenate([f, np.repeat(f[-1:], pad, 0)]))
        actions.append(np.concatenate([a, np.repeat(a[-1:], pad, 0)]))
        r = ep.rewards[start + context - 1 : start + context - 1 + n]
        d = ep.terminated[start + context - 1 : start + context - 1 + n]
        rewards.append(np.pad(r, (0, pad)))
        terms.append(np.pad(d, (0, pad)))
        valid.append(np.arange(horizon) < n)
        if state_key is not None:
            st = ep.states[state_key][
                start + context : start + context + n
            ]  # already loaded with the episode
            states.append(np.concatenate([st, np.repeat(st[-1:], pad, 0)]))
    out = [np.stack(x) for x in (frames, actions, rewards, terms, valid)]
    return [*out, np.stack(states) if states else None]


@torch.no_grad()
def evaluate_model(model: WorldModel, store: EpisodeStore, ids: list[int], cfg: EvalConfig) -> dict[str, Any]:
    horizon = max(cfg.horizons)
    readout, meta = load_readout(cfg.readout) if cfg.readout else (None, {})
    # the store's recorded true states, where it has the readout's: the readout's own error on these frames
    key = meta.get("config", {}).get("state_key")
    key = key if key in store.meta.state_keys else None
    frames, actions, rewards, terms, valid, truth_states = _windows(store, ids, cfg.context, horizon, key)
    if truth_states is not None and truth_states.shape[2:] != (meta.get("dim"),):
        truth_states = None  # the same name for another world's state: nothing to compare with
    b = len(frames)
    if b == 0:
        raise ValueError(f"no held-out episode is long enough for a {cfg.context}-frame context")
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed)
    state = model.reset(frames[:, : cfg.context], actions[:, : cfg.context - 1], generator=gen)
    psnr, ssim = np.zeros((b, horizon)), np.zeros((b, horizon))
    recall, ghost = np.zeros((b, horizon)), np.zeros((b, horizon))
    pred_r, pred_t = np.zeros((b, horizon)), np.zeros((b, horizon))
    shown = []  # the first few rollouts' frames, for the filmstrip
    spec = contact_spec(model)
    contact_gap = np.full((b, horizon), np.inf)  # the frames' agent-to-object gap (inf: none found)
    prev = frames[:, cfg.context - 1]
    floor = floor_check_spec(model)
    shows_floor = np.zeros((b, horizon), bool)  # the frames show an object at the floor
    prev_floor = floor_contact(prev, floor) if floor is not None else None
    state_err, held_err, real_err, prev_out = [], [], [], frames[:, cfg.context - 1]
    if readout is not None:  # the frozen frame: the last real context frame, read as standing still
        held_state = read_pairs(readout, prev_out, prev_out)
    for k in tqdm(range(horizon), desc="eval rollouts", disable=not cfg.progress):
        out, _, r, p = model.step(state, actions[:, cfg.context - 1 + k])
        if readout is not None:  # the state the readout reads off each step, imagined vs real
            real_state = read_pairs(readout, frames[:, cfg.context - 1 + k], frames[:, cfg.context + k])
            state_err.append(read_pairs(readout, prev_out, out) - real_state)
            held_err.append(held_state - real_state)
            if truth_states is not None:
                real_err.append(real_state - truth_states[:, k])
            prev_out = out
        if spec is not None:
            contact_gap[:, k], prev = agent_gap(prev, out, spec), out
        if floor is not None:
            near = floor_contact(out, floor)
            shows_floor[:, k], prev_floor = prev_floor | near, near
        truth = frames[:, cfg.context + k]
        psnr[:, k], ssim[:, k] = psnr_uint8(out, truth), ssim_uint8(out, truth)
        recall[:, k], ghost[:, k] = object_recall_uint8(out, truth)
        if k < FILMSTRIP_STEPS:
            shown.append(out[: cfg.filmstrip])
        pred_r[:, k], pred_t[:, k] = r, p
    result: dict[str, Any] = {
        "episodes": b,
        "context": cfg.context,
        "sampler": model.diffusion.sampler,
        "denoising_steps": model.diffusion.steps,
        "warm_start_sigma": model.diffusion.warm_start_sigma,
        "context_sigma": model.diffusion.context_sigma,
        "action_guidance": model.diffusion.action_guidance,
        # what reads rewards and terminations: the separate reward model or the transformer's heads
        "heads": "reward model" if model.reward_model is not None else "transformer heads",
    }
    for h in cfg.horizons:
        m = valid[:, h - 1]
        result[f"psnr@{h}"] = float(np.mean(np.minimum(psnr[m, h - 1], 100.0))) if m.any() else None
        result[f"ssim@{h}"] = float(np.mean(ssim[m, h - 1])) if m.any() else None
        result[f"n@{h}"] = int(m.sum())
        # the trivial baseline a model must beat: the last real context frame, repeated
        held = psnr_uint8(frames[m, cfg.context - 1], frames[m, cfg.context + h - 1]) if m.any() else None
        result[f"copy_last_psnr@{h}"] = float(np.mean(np.minimum(held, 100.0))) if m.any() else None
        # objects kept vs faded or left behind (PSNR rewards a faded frame; these do not)
        result[f"object_recall@{h}"] = float(np.mean(recall[m, h - 1])) if m.any() else None
        result[f"object_ghost@{h}"] = float(np.mean(ghost[m, h - 1])) if m.any() else None
        if m.any():
            kept, stray = object_recall_uint8(frames[m, cfg.context - 1], frames[m, cfg.context + h - 1])
            result[f"copy_last_object_recall@{h}"] = float(np.mean(kept))
            result[f"copy_last_object_ghost@{h}"] = float(np.mean(stray))
    if readout is not None:  # rms over rollouts per state dimension, and the copy-last baseline's
        err, held = np.stack(state_err, 1), np.stack(held_err, 1)  # (b, horizon, dim)
        for h in cfg.horizons:
            m = valid[:, h - 1]
            if m.any():
                result[f"state_rmse@{h}"] = np.sqrt((err[m, h - 1] ** 2).mean(0)).tolist()
                result[f"copy_last_state_rmse@{h}"] = np.sqrt((held[m, h - 1] ** 2).mean(0)).tolist()
        if real_err:  # a readout off on these frames (not the ones it learnt from) blurs every error above
            real = np.stack(real_err, 1)[valid]
            result["readout_rmse_real"] = np.sqrt((real**2).mean(0)).tolist()
        result["readout"] = cfg.readout
    result["reward_mae"] = float(np.abs(pred_r - rewards)[valid].mean())
    result["reward_true_mean"] = float(rewards[valid].mean())
    fired, truth = (pred_t > 0.5) & valid, terms.astype(bool) & valid
    tp = int((fired & truth).sum())
    result["termination_precision"] = tp / int(fired.sum()) if fired.any() else None
    result["termination_recall"] = tp / int(truth.sum()) if truth.any() else None
    result["terminations"] = int(truth.sum())
    result.update(termination_on_real_frames(model, store, ids, cfg.seed))
    if spec is not None:
        result.update(contact_gate_scores(store, ids, spec, pred_r[valid], contact_gap[valid]))
    if floor is not None:
        result.update(floor_gate_scores(store, ids, floor, pred_t[valid], shows_floor[valid]))
    result["psnr_by_step"] = [
        float(np.mean(np.minimum(psnr[valid[:, k], k], 100.0))) for k in range(horizon) if valid[:, k].any()
    ]
    if cfg.filmstrip > 0:  # real vs imagined frames (not JSON: run_eval draws them)
        n = len(shown)
        result["_filmstrip"] = (frames[: cfg.filmstrip, cfg.context : cfg.context + n], np.stack(shown, 1))
    return result


def contact_spec(model: WorldModel) -> Any:
    """The probes' view of the model's world if it has an agent body to touch (Balls), else None."""
    from simworld.probes.world import WorldSpec

    try:
        spec = WorldSpec.from_world(model.cfg.world_id, model.cfg.world_params)
    except (ValueError, KeyError):  # no flat colours to track (CartPole)
        return None
    return spec if any(o.agent for o in spec.objects) else None


def contact_gate_scores(
    store: EpisodeStore, ids: list[int], spec: Any, rollout_reward: np.ndarray, rollout_gap: np.ndarray
) -> dict[str, Any]:
    """What a contact gate (``reward_contact_gap=0.5``, ``envs.probe_wrapper.ContactRewardVectorWrapper``)
    would do: on the held-out real episodes, the share of the world's reward it keeps and of the steps
    it lets pay; on the open-loop rollouts, the share of the predicted reward whose frames show a
    contact. A gate that keeps the world's rewards but drops much of a rollout's is dropping rewards
    the model pays for frames that do not show them; ``contact_gate_rollout_reward_unseen`` is the
    share of the predicted reward on steps where the tracker finds no object to touch (dissolved
    frames) rather than one too far away."""
    paid, passed = [], []
    for eid in ids:
        ep = store.load(eid)
        paid.append(ep.rewards)
        passed.append(agent_contact(ep.frames[:-1], ep.frames[1:], spec))
    r, g = np.concatenate(paid), np.concatenate(passed)
    total = float(rollout_reward.sum())
    share = lambda m: float(rollout_reward[m].sum() / total) if total > 0 else None  # noqa: E731
    return {
        "contact_gate_real_reward_kept": float(r[g].sum() / r.sum()) if r.sum() > 0 else None,
        "contact_gate_real_steps_passed": float(g.mean()) if len(g) else None,
        "contact_gate_rollout_reward_kept": share(rollout_gap <= 0.5),
        "contact_gate_rollout_reward_unseen": share(np.isinf(rollout_gap)),
    }


def floor_check_spec(model: WorldModel) -> Any:
    """The probes' spec of the model's world if its episodes can end at a floor (Balls), else None."""
    try:
        return floor_spec(model.cfg.world_id, model.cfg.world_params)
    except ValueError:
        return None


def floor_gate_scores(
    store: EpisodeStore, ids: list[int], spec: Any, rollout_prob: np.ndarray, rollout_shown: np.ndarray
) -> dict[str, Any]:
    """What the floor check (``termination_floor_gap=0.5``, ``envs.dream.DreamVectorEnv``) would do:
    on the held-out real episodes, the share of terminations it keeps and of the other steps it lets
    end; on the open-loop rollouts, the share of the predicted termination probability whose frames
    show an object at the floor. A check that keeps the world's terminations but drops much of a
    rollout's is dropping ends the model predicts for frames that do not show them."""
    ends, others = [], []
    for eid in ids:
        ep = store.load(eid)
        shown, term = floor_steps(ep.frames, spec), ep.terminated.astype(bool)
        ends.append(shown[term])
        others.append(shown[~term])
    e, o = np.concatenate(ends), np.concatenate(others)
    total = float(rollout_prob.sum())
    return {
        "floor_gate_real_terminations_kept": float(e.mean()) if len(e) else None,
        "floor_gate_real_steps_passed": float(o.mean()) if len(o) else None,
        "floor_gate_rollout_termination_kept": float(rollout_prob[rollout_shown].sum() / total)
        if total > 0
        else None,
    }


@torch.no_grad()
def termination_on_real_frames(
    model: WorldModel, store: EpisodeStore, ids: list[int], seed: int = 0, last: int = 32
) -> dict[str, Any]:
    """The termination head on the real last ``last`` frames of each held-out episode (no rollout):
    AUROC of its probability (terminal transition vs the others) and precision/recall at 0.5.

    A head that scores well here but never fires in rollouts is failed by the rollout (the frames
    it is shown), not by the head."""
    from simworld.probes.validate import auc

    probs, truth, rew_pred, rew_true = [], [], [], []
    for eid in ids:
        ep = store.load(eid)
        n = min(last, len(ep.frames))
        if n < 2:
            continue
        r, p = model.heads_on_frames(ep.frames[None, -n:], ep.actions[None, -(n - 1) :], seed=seed)
        probs.append(p[0])
        truth.append(ep.terminated[-(n - 1) :])
        rew_pred.append(r[0])
        rew_true.append(ep.rewards[-(n - 1) :])
    if not probs:
        return {}
    rewards = reward_head_scores(np.concatenate(rew_pred), np.concatenate(rew_true), model.cfg.reward_values)
    p, y = np.concatenate(probs), np.concatenate(truth).astype(bool)
    fired = p > 0.5
    tp = int((fired & y).sum())
    # the threshold that would make the head most useful (best F1 on these frames): a calibration
    # for DreamVectorEnv(termination_threshold=...), since a head trained on rare events fires rarely
    best_f1, best_t = 0.0, None
    for t in np.unique(p[y]) if y.any() else []:
        f = p >= t
        prec, rec = (f & y).sum() / f.sum(), (f & y).sum() / y.sum()
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        if f1 > best_f1:
            best_f1, best_t = float(f1), float(t)
    return {
        "termination_real_best_f1": best_f1,
        "termination_real_best_threshold": best_t,
        "termination_real_auroc": auc(p[y], p[~y]) if y.any() and (~y).any() else None,
        "termination_real_precision": tp / int(fired.sum()) if fired.any() else None,
        "termination_real_recall": tp / int(y.sum()) if y.any() else None,
        "termination_real_mean_prob_terminal": float(p[y].mean()) if y.any() else None,
        "termination_real_mean_prob_other": float(p[~y].mean()),
        **rewards,
    }


def reward_head_scores(pred: np.ndarray, true: np.ndarray, values: list[float] | None) -> dict[str, Any]:
    """The reward head on real transitions: its mean output where the world paid and where it did
    not, and (snapped to ``values`` as the dream does) how often it pays what the world paid."""
    paid = true != 0
    out: dict[str, Any] = {
        "reward_real_mean_paid": float(pred[paid].mean()) if paid.any() else None,
        "reward_real_mean_unpaid": float(pred[~paid].mean()) if (~paid).any() else None,
        "reward_real_paid_transitions": int(paid.sum()),
    }
    if values:
        v = np.asarray(values, np.float32)
        snapped = v[np.abs(pred[:, None] - v[None]).argmin(axis=1)]
        out["reward_real_snapped_hit_rate"] = (
            float((snapped[paid] == true[paid]).mean()) if paid.any() else None
        )
        out["reward_real_snapped_false_pay"] = float((snapped[~paid] != 0).mean()) if (~paid).any() else None
    return out


def print_table(result: dict[str, Any], horizons: list[int]) -> None:
    print(
        f"open-loop rollouts on {result['episodes']} held-out episodes, {result['context']} context frames, "
        f"{result['sampler']} x {result['denoising_steps']} denoising steps"
        + (f", action guidance {result['action_guidance']}" if result.get("action_guidance") else "")
    )
    print("horizon  " + "  ".join(f"{h:>6}" for h in horizons))
    for name in ("psnr", "ssim"):
        vals = [result[f"{name}@{h}"] for h in horizons]
        print(
            f"{name:<8} "
            + "  ".join(
                "   n/a" if v is None else f"{v:6.3f}" if name == "ssim" else f"{v:6.2f}" for v in vals
            )
        )
    vals = [result.get(f"copy_last_psnr@{h}") for h in horizons]
    print(
        "copy-last"
        + "".join("     n/a" if v is None else f"  {v:6.2f}" for v in vals)
        + "  (PSNR of repeating the last real frame)"
    )
    for name, what in (("object_recall", "objects kept"), ("object_ghost", "drawn where none are")):
        for prefix, label in (("", name.replace("object_", "obj ")), ("copy_last_", "  copy-last")):
            vals = [result.get(f"{prefix}{name}@{h}") for h in horizons]
            if any(v is not None for v in vals):
                print(
                    f"{label:<9}"
                    + "".join("     n/a" if v is None else f"  {v:6.2f}" for v in vals)
                    + (f"  ({what})" if not prefix else "")
                )
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    if "readout" in result:
        print(f"state read by {result['readout']}, rms error per dimension (copy-last in brackets):")
        for h in horizons:
            if f"state_rmse@{h}" in result:
                pairs = zip(result[f"state_rmse@{h}"], result[f"copy_last_state_rmse@{h}"], strict=True)
                print(f"  @{h:<4} " + "  ".join(f"{e:.4f} ({c:.4f})" for e, c in pairs))
        if "readout_rmse_real" in result:
            print(
                "  the readout's own error on these real frames (vs the recorded state): "
                + "  ".join(f"{e:.4f}" for e in result["readout_rmse_real"])
            )
    print(
        f"reward MAE {result['reward_mae']:.4f} (true mean reward {result['reward_true_mean']:.4f}); "
        f"termination precision {fmt(result['termination_precision'])}, "
        f"recall {fmt(result['termination_recall'])} over {result['terminations']} terminations"
    )
    if "termination_real_auroc" in result:
        print(
            f"termination ({result.get('heads', 'transformer heads')}) on real frames: AUROC {fmt(result['termination_real_auroc'])}, "
            f"precision {fmt(result['termination_real_precision'])}, recall {fmt(result['termination_real_recall'])}, "
            f"mean p {fmt(result['termination_real_mean_prob_terminal'])} (terminal) vs "
            f"{fmt(result['termination_real_mean_prob_other'])} (other); best F1 {fmt(result['termination_real_best_f1'])} "
            f"at threshold {result['termination_real_best_threshold']}"
        )
    if result.get("reward_real_paid_transitions"):
        print(
            f"reward ({result.get('heads', 'transformer heads')}) on real frames: mean {fmt(result['reward_real_mean_paid'])} where the world paid "
            f"({result['reward_real_paid_transitions']} transitions) vs {fmt(result['reward_real_mean_unpaid'])} "
            f"elsewhere; snapped: pays the true reward {fmt(result.get('reward_real_snapped_hit_rate'))}, "
            f"pays where the world did not {fmt(result.get('reward_real_snapped_false_pay'))}"
        )
    if "contact_gate_real_steps_passed" in result:
        print(
            f"contact gate (reward_contact_gap=0.5): keeps {fmt(result['contact_gate_real_reward_kept'])} of the "
            f"real reward, lets {fmt(result['contact_gate_real_steps_passed'])} of real steps pay; keeps "
            f"{fmt(result['contact_gate_rollout_reward_kept'])} of the rollouts' predicted reward "
            f"({fmt(result['contact_gate_rollout_reward_unseen'])} of it is on frames where no object to "
            "touch is found)"
        )
    if "floor_gate_real_steps_passed" in result:
        print(
            f"floor check (termination_floor_gap=0.5): keeps {fmt(result['floor_gate_real_terminations_kept'])} "
            f"of real terminations, lets {fmt(result['floor_gate_real_steps_passed'])} of the other real "
            f"steps end; keeps {fmt(result['floor_gate_rollout_termination_kept'])} of the rollouts' "
            "predicted termination probability"
        )


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    model = WorldModel.from_pretrained(cfg.model, device=cfg.device)
    model.set_sampling(cfg.steps, cfg.sampler, cfg.warm_start_sigma, cfg.context_sigma, cfg.action_guidance)
    store = EpisodeStore(cfg.store)
    if store.meta.world_id != model.cfg.world_id:
        raise ValueError(
            f"model {cfg.model} was trained on {model.cfg.world_id}, store {cfg.store} holds "
            f"{store.meta.world_id}"
        )
    _, val_ids = store.split(cfg.val_fraction, seed=cfg.split_seed)
    ids = val_ids[: cfg.episodes]
    result = evaluate_model(model, store, ids, cfg)
    print_table(result, cfg.horizons)
    out = Path(cfg.out) if cfg.out else Path(cfg.model) / "eval.json"
    strip = result.pop("_filmstrip", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    if strip is not None:
        png = filmstrip(out.parent / "filmstrip.png", *strip, every=3)
        print(f"wrote {png} (per rollout: real frames above, imagined below, every 3rd step)")
    return result
