"""Agents: trained in the dream or the real world, scored in the real world, resumable; the loop."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.loop import LOOP_OPTIM, LoopConfig, real_steps, run_loop
from agents.train import AgentConfig, evaluate_agent, train_agent
from simworld.data.store import EpisodeStore
from tests.test_cli import simworld

WORLD = {"name": "balls", "id": "simworld/Balls-v0", "max_episode_steps": 12, "kwargs": {}}
PPO_TINY = {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
TINY_LOOP = dict(  # a world-model loop that runs in seconds
    model_steps=2,
    model={"dynamics": {"size": "tiny", "context": 4}, "window": 4, "batch_size": 2, "bank_size": 4},
    agent_steps=32,
    num_envs=2,
    max_episode_steps=10,
    agent_kwargs=PPO_TINY,
)


def tiny_bench(tmp_path, **kw):
    """A benchmark over two seeds that runs in seconds (BenchConfig fields)."""
    base = dict(
        world=WORLD,
        seeds=[0, 1],
        real_frames=40,
        large_frames=64,
        iterations=1,
        **TINY_LOOP,
        eval_points=2,
        eval_episodes=1,
        score_episodes=2,
        out=str(tmp_path / "bench"),
        progress=False,
        num_threads=1,
    )
    return {**base, **kw}


def agent_cfg(tmp_path, **kw):
    base = dict(
        world=WORLD,
        timesteps=32,
        num_envs=2,
        max_episode_steps=10,
        eval_every=16,
        eval_episodes=1,
        ckpt_every=16,
        agent_kwargs=PPO_TINY,
        out=str(tmp_path / "agent"),
        progress=False,
        num_threads=1,
    )
    return AgentConfig(**{**base, **kw})


def test_train_in_the_dream_evaluate_in_the_world_and_resume(checkpoint, tmp_path):
    result = train_agent(agent_cfg(tmp_path, checkpoint=str(checkpoint)))
    run = tmp_path / "agent"
    for name in ("last.zip", "best_model.zip", "agent.json", "result.json"):
        assert (run / name).exists(), name
    assert any((run / "tb").iterdir())  # dream returns and real evaluations for TensorBoard
    assert result["timesteps"] == 32 and result["world"] == "simworld/Balls-v0"
    with pytest.raises(FileExistsError, match="resume=true"):
        train_agent(agent_cfg(tmp_path, checkpoint=str(checkpoint)))
    resumed = train_agent(agent_cfg(tmp_path, checkpoint=str(checkpoint), timesteps=64, resume=True))
    assert resumed["timesteps"] == 64  # continued, not restarted

    video = tmp_path / "eval.mp4"
    scores = evaluate_agent(run / "last.zip", episodes=2, video=str(video))
    assert len(scores["returns"]) == 2 and scores["std_return"] >= 0 and video.stat().st_size > 0

    proc = simworld(
        "agent",
        "eval",
        f"policy={run / 'last.zip'}",
        "episodes=1",
        "video=null",
        f"out={tmp_path / 'e.json'}",
    )
    assert "return" in proc.stdout and json.loads((tmp_path / "e.json").read_text())["episodes"] == 1
    proc = simworld(  # beside the world's return: the dream's and the world's from the same starts
        "agent", "eval", f"policy={run / 'last.zip'}", "episodes=1", "video=null", f"dream={checkpoint}",
        "dream_starts=2", "dream_steps=3", f"out={tmp_path / 'g.json'}",
    )  # fmt: skip
    gap = json.loads((tmp_path / "g.json").read_text())["dream_vs_real"]
    assert "overrating" in proc.stdout and gap["starts"] == 2 and len(gap["per_start_return"]["dream"]) == 2
    simworld(  # the same, paying only the dream steps whose frames show a ball at the paddle
        "agent", "eval", f"policy={run / 'last.zip'}", "episodes=1", "video=null", f"dream={checkpoint}",
        "dream_starts=2", "dream_steps=3", "dream_reward_contact_gap=0.5", f"out={tmp_path / 'h.json'}",
    )  # fmt: skip
    gated = json.loads((tmp_path / "h.json").read_text())["dream_vs_real"]
    assert gap["return"]["dream"] != 0 and gated["return"]["dream"] == 0  # random-weights frames: no paddle
    assert gated["return"]["real"] == gap["return"]["real"]
    gated_run = train_agent(  # and an agent trained on that dream
        agent_cfg(
            tmp_path,
            checkpoint=str(checkpoint),
            out=str(tmp_path / "gated"),
            reward_contact_gap=0.5,
            termination_floor_gap=0.5,
        )
    )
    assert gated_run["timesteps"] == 32
    for setting, dream_return in [(None, 0.0), ("off", gap["return"]["dream"])]:  # None: as it trained
        simworld(
            "agent", "eval", f"policy={tmp_path / 'gated' / 'last.zip'}", "episodes=1", "video=null",
            f"dream={checkpoint}", "dream_starts=2", "dream_steps=3", f"out={tmp_path / 'i.json'}",
            *([f"dream_reward_contact_gap={setting}", f"dream_termination_floor_gap={setting}"] if setting else []),
        )  # fmt: skip
        read = json.loads((tmp_path / "i.json").read_text())["dream_vs_real"]
        assert (
            read["reward_contact_gap"] == read["termination_floor_gap"] == (0.5 if setting is None else None)
        )
        assert (read["return"]["dream"] == 0.0) == (dream_return == 0.0)
        # random-weights frames show no ball at the floor: the checked dream never ends an episode
        assert (read["ended"]["dream"] == 0.0) == (setting is None)

    # the trained policy as a frame -> action function sees what the training pipeline showed it
    from agents.train import FramePolicy, newest_frame, real_venv
    from simworld.rollout import rollout

    policy = FramePolicy(run / "last.zip")
    venv = real_venv(WORLD, 1, 0, policy.frame_stack)
    obs = venv.reset()
    for _ in range(5):
        policy(newest_frame(obs))
        assert np.array_equal(policy._stack, obs[0])
        obs = venv.step(np.array([2]))[0]
    venv.close()
    # started from a dream's context window, it stacks what the dream environment shows first
    from gymnasium.vector import AutoresetMode

    from agents.sb3 import SB3VecEnv
    from agents.train import preprocess
    from envs.dream import DreamVectorEnv

    dream = preprocess(SB3VecEnv(DreamVectorEnv(1, checkpoint, autoreset_mode=AutoresetMode.SAME_STEP)), 4)
    dream.seed(0)
    obs = dream.reset()
    context = dream.unwrapped.reset_infos[0]["context_frames"]
    policy.reset(context[:-1])
    policy(context[-1])
    assert np.array_equal(policy._stack, obs[0]) and obs[0, 3:].any()
    traj = rollout(checkpoint, str(run / "last.zip"), steps=4)
    assert traj.actions.shape == (4,) and set(traj.actions.tolist()) <= {0, 1, 2}


def test_random_policy_floor(tmp_path):
    scores = evaluate_agent("random", WORLD, episodes=3, seed=1)
    assert len(scores["returns"]) == 3 and 1 <= scores["mean_length"] <= 12
    assert scores == evaluate_agent("random", WORLD, episodes=3, seed=1)  # seeded


def test_eval_reports_the_state_each_episode_ended_in():
    cartpole = {"name": "cartpole", "id": "simworld/PixelCartPole-v1", "kwargs": {}}
    scores = evaluate_agent("random", cartpole, episodes=3, seed=0)
    assert len(scores["final_states"]) == 3 and max(scores["returns"]) < 500  # all fell, none timed out
    for end in scores["final_states"]:
        x, _, theta, _ = end["obs"]  # a random policy's episode ends with the pole down or the cart out
        assert abs(theta) > 0.2095 or abs(x) > 2.4, end


def test_real_world_baseline_trains_on_the_world_itself(tmp_path):
    result = train_agent(agent_cfg(tmp_path, env="real", eval_every=0))
    assert result["env"] == "real" and result["timesteps"] == 32
    # a run moved elsewhere resumes there, TensorBoard included (the zip remembers its old folder)
    (tmp_path / "agent").rename(tmp_path / "moved")
    before = len(list((tmp_path / "moved" / "tb").rglob("events*")))
    cfg = agent_cfg(
        tmp_path, env="real", eval_every=0, timesteps=64, resume=True, out=str(tmp_path / "moved")
    )
    assert train_agent(cfg)["timesteps"] == 64
    assert (
        not (tmp_path / "agent").exists() and len(list((tmp_path / "moved" / "tb").rglob("events*"))) > before
    )


def test_resume_goes_on_with_changed_agent_kwargs_and_records_them(tmp_path, capsys):
    from stable_baselines3 import PPO

    train_agent(agent_cfg(tmp_path, env="real", eval_every=0))
    lower = {"learning_rate": 1e-4, "n_epochs": 2}  # e.g. a gentler final stage
    cfg = agent_cfg(tmp_path, env="real", eval_every=0, timesteps=64, resume=True, agent_kwargs=lower)
    assert train_agent(cfg)["timesteps"] == 64
    assert "n_epochs 1 -> 2, learning_rate = 0.0001" in capsys.readouterr().out  # said, not silent
    model = PPO.load(tmp_path / "agent" / "last.zip")
    assert model.lr_schedule(1.0) == 1e-4 and model.policy.optimizer.param_groups[0]["lr"] == 1e-4
    assert model.n_epochs == 2 and model.n_steps == 16  # the saved n_steps kept where none is given
    meta = json.loads((tmp_path / "agent" / "agent.json").read_text())
    assert meta["agent_kwargs"] == {**PPO_TINY, **lower}  # what the run now trains with
    with pytest.raises(ValueError, match="takes no \\['learning_rat'\\]"):
        train_agent(agent_cfg(tmp_path, env="real", resume=True, agent_kwargs={"learning_rat": 1e-4}))
    with pytest.raises(ValueError, match="policy_kwargs cannot change on resume"):
        wider = {"policy_kwargs": {"net_arch": [8]}}
        train_agent(agent_cfg(tmp_path, env="real", resume=True, agent_kwargs={**PPO_TINY, **wider}))


def test_the_oracle_trains_under_the_dreams_horizon_on_the_real_world(checkpoint, tmp_path):
    result = train_agent(agent_cfg(tmp_path, env="oracle", checkpoint=str(checkpoint), max_episode_steps=5))
    assert result["env"] == "oracle" and result["timesteps"] == 32
    # its training episodes are the dream's: started from the bank, cut at the horizon, real rewards
    assert 1 <= result["train"]["mean_length"] <= 5
    assert json.loads((tmp_path / "agent" / "agent.json").read_text())["env"] == "oracle"


def test_exported_policy_is_smaller_acts_the_same_and_runs_as_shipped(tmp_path, monkeypatch):
    import agents.train as train
    from simworld.rollout import resolve_policy

    train_agent(agent_cfg(tmp_path, env="real", eval_every=0))
    src = tmp_path / "agent" / "last.zip"
    proc = simworld(
        "agent", "export", f"policy={src}", f"out={tmp_path / 'ship' / 'tiny'}", "eval_episodes=1"
    )
    exported = tmp_path / "ship" / "tiny" / "policy.zip"
    assert "real return" in proc.stdout and exported.stat().st_size < src.stat().st_size / 2
    meta = json.loads((exported.parent / "agent.json").read_text())
    assert (
        meta["frame_stack"] == 4 and meta["real_eval"]["episodes"] == 1 and meta["exported_from"] == str(src)
    )
    (a, _), (b, _) = train.load_policy(src), train.load_policy(exported)
    obs = np.random.default_rng(0).integers(0, 256, (16, *a.observation_space.shape), dtype=np.uint8)
    assert np.array_equal(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])

    monkeypatch.setattr(train, "POLICY_ASSETS", tmp_path / "ship")
    assert train.shipped_policies() == ["tiny"]
    assert (
        evaluate_agent("shipped:tiny", episodes=1)["world"] == "simworld/Balls-v0"
    )  # its agent.json's world
    assert isinstance(resolve_policy("shipped:tiny", None), train.FramePolicy)
    with pytest.raises(FileNotFoundError, match="no shipped policy 'nope'; shipped: tiny"):
        train.load_policy("shipped:nope")
    monkeypatch.chdir(tmp_path)  # the training run's paths ship relative to where it was exported
    meta = json.loads((train.export_policy(src, "again").parent / "agent.json").read_text())
    assert meta["out"] == "agent" and meta["exported_from"] == str(src)


@pytest.mark.parametrize(
    ("name", "world"), [("cartpole", "simworld/PixelCartPole-v1"), ("balls", "simworld/Balls-v0")]
)
def test_each_shipped_policy_plays_its_own_world(name, world):
    from agents.train import FramePolicy, shipped_policies
    from simworld.rollout import resolve_policy

    assert name in shipped_policies()
    scores = evaluate_agent(f"shipped:{name}", episodes=1, seed=0)  # its own world from agent.json
    assert scores["world"] == world and scores["episodes"] == 1
    assert isinstance(resolve_policy(f"shipped:{name}", None), FramePolicy)


def test_bad_agent_configs_name_the_problem(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown agent"):
        agent_cfg(tmp_path, agent="rainbow")
    with pytest.raises(ValueError, match="env must be"):
        agent_cfg(tmp_path, env="sim")
    cartpole = {"name": "cartpole", "id": "simworld/PixelCartPole-v1", "max_episode_steps": 12, "kwargs": {}}
    with pytest.raises(ValueError, match="action space"):
        train_agent(agent_cfg(tmp_path, world=cartpole, checkpoint=str(checkpoint)))


@pytest.mark.slow
def test_world_model_loop_end_to_end_and_resume(tmp_path):
    from simworld.data.store import EpisodeStore
    from simworld.probes.readout import ReadoutConfig, StateReadout, save_readout

    readout = save_readout(
        StateReadout(3, (64, 64), width=4), ReadoutConfig(width=4), tmp_path / "ro", (64, 64)
    )
    cfg = dict(
        readout=str(readout),
        world=WORLD,
        real_frames=60,
        iterations=2,
        **TINY_LOOP,
        eval_episodes=1,
        out=str(tmp_path / "loop"),
        progress=False,
        num_threads=1,
    )
    state = run_loop(LoopConfig(**cfg))
    history = state["history"]
    assert [h["iteration"] for h in history] == [0, 1]
    assert 30 <= history[0]["real_frames"] < history[1]["real_frames"]  # the budget is spent per iteration
    assert history[1]["agent_steps"] == 64
    # each round's own collection: its actions add up to the real steps it took
    assert sum(history[0]["collect_action_counts"]) == history[0]["real_frames"]
    assert sum(history[1]["collect_action_counts"]) == history[1]["real_frames"] - history[0]["real_frames"]
    assert all(0 <= h["collect_action_repeat"] <= 1 for h in history)
    assert all(h["dream_action_effect"] >= 0 for h in history)  # dream vs real response to actions
    assert all(len(h["dream_state_effect"]) == 3 for h in history)  # ... and per state dimension, read
    # the trained policy's return over the horizon, dream vs world from the same starts
    assert all(set(h["policy_return"]) == {"dream", "real", "real_closed"} for h in history)
    for path in ("loop.json", "store", "model/model/config.json", "agent/last.zip"):
        assert (tmp_path / "loop" / path).exists(), path
    # the model trained with `simworld train`'s optimiser (lr 1e-3), not TrainConfig's default
    trained = json.loads((tmp_path / "loop" / "model" / "train_config.json").read_text())
    assert {k: trained[k] for k in LOOP_OPTIM} == LOOP_OPTIM
    with pytest.raises(FileExistsError, match="resume=true"):
        run_loop(LoopConfig(**cfg))
    resumed = {**cfg, "iterations": 3, "real_frames": 90, "resume": True, "final_agent_steps": 32}
    state = run_loop(LoopConfig(**resumed))
    assert [h["iteration"] for h in state["history"]] == [0, 1, 2]
    assert state["history"][2]["agent_steps"] == 96 + 32  # the last round trains on after its frames
    # a finished loop asked for more final steps trains on in its last dream, spending no real frames
    frames = state["history"][2]["real_frames"]
    state = run_loop(LoopConfig(**{**resumed, "final_agent_steps": 64}))
    last = state["history"][-1]
    assert len(state["history"]) == 3 and last["agent_steps"] == 96 + 64
    assert last["real_frames"] == frames == real_steps(EpisodeStore(tmp_path / "loop" / "store"))
    assert last["before"]["agent_steps"] == 96 + 32  # what it scored before is kept
    assert run_loop(LoopConfig(**{**resumed, "final_agent_steps": 64}))["history"] == state["history"]


def test_the_loop_is_reproducible_from_its_seed(tmp_path):
    """The same config and seed on the same machine: the same history (frames spent, actions taken,
    scores) and the same model weights."""
    from safetensors.torch import load_file

    def run(name, seed):
        cfg = dict(world=WORLD, real_frames=40, iterations=1, **TINY_LOOP, eval_episodes=1, seed=seed)
        out = tmp_path / name
        hist = run_loop(LoopConfig(**cfg, out=str(out), progress=False, num_threads=1))["history"]
        return hist, load_file(out / "model" / "model" / "model.safetensors")

    (hist_a, w_a), (hist_b, w_b), (_, w_c) = run("a", 3), run("b", 3), run("c", 4)
    assert hist_a == hist_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert not all(torch.equal(w_a[k], w_c[k]) for k in w_a)  # another seed is another run


def test_loop_collection_mixes_random_actions_into_the_policys(tmp_path, monkeypatch):
    import agents.loop as loop
    from simworld.data.collect import store_meta_for_world
    from simworld.data.store import EpisodeStore
    from simworld.worlds import WorldConfig

    class AlwaysTwo:  # a policy whose actions the store would make predictable
        def predict(self, obs, deterministic=False):
            return np.full(len(obs), 2), None

    monkeypatch.setattr(loop, "load_policy", lambda path: (AlwaysTwo(), None))
    shares = {}
    for share in (0.0, 0.5):
        store = EpisodeStore.create(tmp_path / f"s{share}", store_meta_for_world(WorldConfig(**WORLD)))
        loop.collect_with_policy(
            WORLD, store, 120, Path("p.zip"), 4, seed=0, progress=False, random_share=share
        )
        store.refresh()
        actions = np.concatenate([store.read_array(i, "actions") for i in store.episode_ids])
        shares[share] = float(np.mean(actions != 2))
        assert ("random steps" in store.info(store.episode_ids[0])["policy"]) == (share > 0)
    assert shares[0.0] == 0.0  # the policy alone
    assert 0.15 < shares[0.5] < 0.55  # half the steps random, two thirds of those not the policy's 2
    with pytest.raises(ValueError, match="collect_random"):
        LoopConfig(world=WORLD, collect_random=1.5)
    with pytest.raises(ValueError, match="termination_bounds needs a readout"):
        LoopConfig(world=WORLD, termination_bounds={2: 0.2})


def test_benchmark_runs_every_arm_and_seed_then_tables_them(tmp_path):
    from agents.benchmark import BenchConfig, run_benchmark

    cfg = tiny_bench(tmp_path)
    summary = run_benchmark(BenchConfig(**cfg))
    root = tmp_path / "bench" / "balls"
    assert set(summary["arms"]) == {"dream", "real", "real_large"}
    for arm, budget in [("dream", 40), ("real", 40), ("real_large", 64)]:
        runs = summary["arms"][arm]["runs"]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["real_frames"] >= budget for r in runs)
    assert summary["arms"]["real_large"]["runs"][0]["curve"]["real_frames"] == [32, 64]
    assert "dream_reward_per_step" in summary["arms"]["dream"]["runs"][0]
    curve = summary["arms"]["dream"]["runs"][0]["policy_curve"]  # the dream's return vs the world's
    assert len(curve["real_frames"]) == len(curve["dream"]) == len(curve["real"]) == 1
    for name in ("benchmark.json", "table.md", "curves.png"):
        assert (root / name).exists(), name
    assert "real-trained, large | 64 | 2 |" in (root / "table.md").read_text()
    # every finished policy is scored on the same episodes, and the arms are ranked on those
    for arm in ("dream", "real", "real_large"):
        scores = [r["score"]["mean_return"] for r in summary["arms"][arm]["runs"]]
        assert len(scores) == 2 and summary["arms"][arm]["score"]["mean"] == pytest.approx(np.mean(scores))
    seed0 = json.loads((root / "real_40" / "seed0" / "score.json").read_text())
    alone = evaluate_agent(root / "real_40" / "seed0" / "last.zip", WORLD, episodes=2, seed=0)
    assert seed0["returns"] == alone["returns"] and seed0["mean_length"] == alone["mean_length"]
    assert "score (the same 2 episodes)" in (root / "table.md").read_text()
    # finished runs are skipped and not scored again; summarising alone reads the same runs
    walls = (root / "real_40" / "seed0" / "wall.json").read_text()
    scored = (root / "dream_40" / "seed0" / "score.json").stat().st_mtime_ns
    again = run_benchmark(BenchConfig(**{**cfg, "run": True}))
    assert (root / "real_40" / "seed0" / "wall.json").read_text() == walls
    assert (root / "dream_40" / "seed0" / "score.json").stat().st_mtime_ns == scored
    assert again["arms"]["dream"]["mean"] == summary["arms"]["dream"]["mean"]
    # more final agent steps asked of finished loops: they count unfinished (and unscored) until they
    # have trained on; then the changed policy is scored again
    more = run_benchmark(BenchConfig(**{**cfg, "run": False, "final_agent_steps": 32}))
    assert not any(r["finished"] or "score" in r for r in more["arms"]["dream"]["runs"])
    on = run_benchmark(BenchConfig(**{**cfg, "arms": ["dream"], "seeds": [0], "final_agent_steps": 32}))
    assert on["arms"]["dream"]["runs"][0]["finished"] and "score" in on["arms"]["dream"]["runs"][0]
    assert (root / "dream_40" / "seed0" / "score.json").stat().st_mtime_ns != scored
    with pytest.raises(ValueError, match="unknown arms"):
        BenchConfig(**{**cfg, "arms": ["dreamy"]})


def test_benchmark_oracle_arm_trains_the_loops_protocol_on_the_real_world(tmp_path):
    from agents.benchmark import BenchConfig, run_benchmark

    model = {**TINY_LOOP["model"], "bank_size": 6, "bank_episode_starts": 0.5}
    cfg = BenchConfig(**tiny_bench(tmp_path, seeds=[0], arms=["oracle"], iterations=2, model=model))
    run = run_benchmark(cfg)["arms"]["oracle"]["runs"][0]
    path = tmp_path / "bench" / "balls" / "oracle_40" / "seed0"
    meta = json.loads((path / "agent" / "agent.json").read_text())
    # the loop's collection and agent steps, no world model: the agent trains on the real world
    # restarted from the store's windows, cut at the loop's horizon
    assert run["finished"] and run["real_frames"] >= 40 and "score" in run
    assert not (path / "model").exists() and real_steps(EpisodeStore(path / "store")) == run["real_frames"]
    hist = json.loads((path / "loop.json").read_text())["history"]
    assert [h["agent_steps"] for h in hist] == [32, 64] and "policy_return" not in hist[-1]
    assert meta["env"] == "oracle" and meta["max_episode_steps"] == 10 and meta["bank_size"] == 6
    assert meta["checkpoint"] == str(path / "store") and 1 <= hist[-1]["dream_mean_length"] <= 10
    assert "the loop with a perfect model" in (tmp_path / "bench" / "balls" / "table.md").read_text()


def test_the_loop_builds_the_world_model_simworld_train_builds():
    """Without ``model.*`` overrides the loop's model, recipe and optimiser are the `simworld train`
    defaults (configs/dynamics/S.yaml, configs/train.yaml)."""
    import yaml

    from agents.loop import LOOP_DIFFUSION, LOOP_DYNAMICS

    configs = Path(__file__).parents[2] / "configs"
    assert yaml.safe_load((configs / "dynamics" / "S.yaml").read_text()) == LOOP_DYNAMICS
    train = yaml.safe_load((configs / "train.yaml").read_text())
    assert train["diffusion"] == LOOP_DIFFUSION
    assert {k: train[k] for k in LOOP_OPTIM} == LOOP_OPTIM


def test_benchmark_ranks_on_the_shared_scores_and_ignores_a_stale_one(tmp_path):
    """The table's ceiling ratio uses the 30-episode scores; a policy changed after its score is unscored."""
    from agents.benchmark import BenchConfig, _digest, policy_path, run_dir, summarise

    cfg = BenchConfig(world=WORLD, seeds=[0], iterations=1, agent_steps=1, out=str(tmp_path / "bench"))
    for arm, ret in [("dream", 40.0), ("real", 50.0), ("real_large", 200.0)]:
        path, policy = run_dir(cfg, arm, 0), policy_path(cfg, arm, 0)
        policy.parent.mkdir(parents=True)
        if arm == "dream":
            hist = [{"agent_steps": 1, "real_mean_return": ret, "real_frames": 5}]
            (path / "loop.json").write_text(json.dumps({"history": hist}))
        else:
            (path / "result.json").write_text(json.dumps({"mean_return": ret, "timesteps": 5}))
        policy.write_bytes(arm.encode())
        score = {"episodes": 30, "policy_sha256": _digest(policy), "mean_return": ret / 4, "std_return": 1.0}
        (path / "score.json").write_text(json.dumps(score))
    summary = summarise(cfg)
    assert summary["ceiling_basis"] == "score" and summary["dream_vs_ceiling"] == pytest.approx(10 / 50)
    assert "20 % (scores, the same 30 episodes)" in (tmp_path / "bench" / "balls" / "table.md").read_text()
    policy_path(cfg, "dream", 0).write_bytes(b"trained on")  # e.g. more final_agent_steps
    summary = summarise(cfg)
    assert "score" not in summary["arms"]["dream"]["runs"][0] and "score" not in summary["arms"]["dream"]
    assert summary["ceiling_basis"] == "evaluation" and summary["dream_vs_ceiling"] == pytest.approx(40 / 200)


@pytest.mark.slow
def test_loop_learns_its_readout_from_its_own_frames_and_ends_dreams_with_it(tmp_path):
    """readout=store: the readout comes from the first round's frames (no frames beyond the budget),
    is kept on resume, and with termination_bounds it ends the dream's steps."""
    cartpole = {"name": "cartpole", "id": "simworld/PixelCartPole-v1", "max_episode_steps": 12, "kwargs": {}}
    cfg = dict(
        world=cartpole,
        real_frames=40,
        iterations=1,
        **TINY_LOOP,
        readout="store",
        termination_bounds={2: 0.2095},
        eval_episodes=1,
        out=str(tmp_path / "loop"),
        progress=False,
        num_threads=1,
    )
    state = run_loop(LoopConfig(**cfg))
    readout = tmp_path / "loop" / "readout" / "readout.safetensors"
    learnt = readout.read_bytes()
    assert len(state["history"][0]["dream_state_effect"]) == 4  # CartPole's four state dimensions
    agent = json.loads((tmp_path / "loop" / "agent" / "agent.json").read_text())
    assert agent["termination_readout"] == str(tmp_path / "loop" / "readout")  # the dream ends with it
    assert agent["termination_bounds"] == {"2": 0.2095}
    state = run_loop(LoopConfig(**{**cfg, "iterations": 2, "real_frames": 80, "resume": True}))
    assert len(state["history"]) == 2 and readout.read_bytes() == learnt  # kept, not relearnt


def test_agent_eval_checks_the_dream_with_the_readout_the_policy_trained_with(tmp_path):
    from simworld.commands import dream_bounds_of

    (tmp_path / "agent.json").write_text(
        json.dumps({"termination_readout": "ro", "termination_bounds": {"2": 0.12}})
    )
    c = {"policy": str(tmp_path / "last.zip")}
    assert dream_bounds_of(c) == ("ro", {2: 0.12})  # as trained, the state index an int again
    assert dream_bounds_of({**c, "dream_termination_bounds": "off"}) == (None, None)
    assert dream_bounds_of({**c, "dream_termination_bounds": {2: 0.2}}) == ("ro", {2: 0.2})
    other = {**c, "dream_termination_bounds": {2: 0.2}, "dream_termination_readout": "other"}
    assert dream_bounds_of(other) == ("other", {2: 0.2})
