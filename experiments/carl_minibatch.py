"""CaRL's mini-batch study on the pure-JAX driving simulator: CaRL reward vs Roach reward.

    python -m experiments.carl_minibatch --preset tiny      # smoke test (~1-2 min, 2 CPU cores)
    python -m experiments.carl_minibatch --preset quick     # 2 rewards x 5 mini-batches x 3 seeds
    python -m experiments.carl_minibatch --preset medium    # 7 mini-batches 256..16k, 2M steps/seed
    python -m experiments.carl_minibatch --preset full      # one GPU

CaRL (shared/reference/carl.md) reports that PPO with a summed, shaped reward (Roach
style) stops improving when the mini-batch grows, while the simple route-completion
reward keeps working. Here PPO (agents.ppo, Beta policy over steer / acceleration,
CaRL's PPO settings at a smaller scale) trains on envs.driving with reward="carl"
and with reward="roach", at a FIXED rollout batch (num_envs x num_steps) while the
mini-batch size sweeps; the number of gradient steps per update falls as the
mini-batch grows, as in CaRL (the table reports each cell's total gradient steps).
Equal-gradient-steps controls at the two ends of the sweep let a reader tell "large
mini-batches see fewer gradient steps" apart from "large mini-batches are worse per
step": `equal_steps_control` adds, per reward, the largest mini-batch trained with
as many epochs as the smallest makes gradient steps (costly: its gradient work is the
mini-batch ratio times a sweep cell's, 64x in the medium preset, which leaves it off
on the CPU), and `small_end_control` the smallest mini-batch taking only as many
mini-batches per epoch as the largest (PPOConfig.minibatches_per_epoch; cheap).
Every cell trains the same seeds (vmapped, chunked and checkpointed by
mo_rl.runner), then runs held-out evaluation episodes with the Beta-mean policy.
Those episodes follow one rule set for both rewards by default (`--eval-rules
leaderboard`: CARLA's leaderboard rules and metrics, envs.driving.rules), since
CaRL's training rules would otherwise cut its evaluation routes short at every red
light run (`common` is the earlier shared rule set, `reward` each reward's training
rules). With `--resume`, complete runs are only re-evaluated (e.g. under other
rules).

Writes results/carl_minibatch/<name>/:
  table.md / table.csv   driving score, route completion, infraction score,
                         success / collision / off-road / red-light rates:
                         mean and 95% bootstrap CI over seeds per (reward, mini-batch)
  metrics.csv            every run's training and evaluation rows
  minibatch.png          evaluation metrics vs mini-batch size, one line per reward
  curves.png             training driving score / route completion per run
  provenance.json + command.txt (every command that produced the folder, each with
  its code version), study.json (config), timings.json, and one runner dir per run.
  `rebuild_tables(folder)` recomputes the study tables (scripts/make_tables.py).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import pandas as pd

import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.ppo import PPOConfig, make_agent
from mo_rl import stats
from mo_rl.config import check, check_positive, load_config, save_config
from mo_rl.results import code_version, device_info, write_study_provenance
from mo_rl.runner import env_identity, run, run_timing, study_identity

STUDY = "carl_minibatch"
REWARDS = ("carl", "roach")
TABLE_METRICS = ("driving_score", "route_completion", "infraction_score", "success",
                 "collision", "off_road", "red_light")
PCT = {"success", "collision", "off_road"}
# the critic's explained variance over the last EV_TAIL of each seed's training updates:
# tells whether the critic keeps up with a reward (e.g. under value clipping)
EV_TAIL = 0.1
EVAL_RULE_SETS = ("leaderboard", "common", "reward")  # envs.driving episode_end values


@dataclass(frozen=True)
class CarlMinibatchConfig:
    """PPO config (its minibatch_size is replaced by each sweep value) and the sweep."""

    agent: PPOConfig
    name: str = "quick"  # results/carl_minibatch/<name>/
    rewards: tuple[str, ...] = REWARDS
    minibatch_sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    seeds: int = 3
    env_preset: str = "quick"  # envs.driving preset
    num_vehicles: int = 8
    max_vehicles: int = 8
    obs_type: str = "vector"  # "bev" for the raster (CNN torso); expensive on CPU
    # envs.driving.ROAD_USERS (walkers, parked cars, stop signs) at their default density:
    # on for every preset since issue 19; false is the world of the earlier tables
    road_users: bool = True
    # held-out episodes: "leaderboard" = CARLA's leaderboard rules for both rewards;
    # "common" = the earlier shared rule set; "reward" = each reward's own training rules
    eval_rules: str = "leaderboard"
    # add, per reward, the largest mini-batch with update_epochs scaled up so its gradient
    # steps equal the smallest mini-batch's (the equal-gradient-steps control)
    equal_steps_control: bool = True
    # add, per reward, the smallest mini-batch with only as many mini-batches per epoch as
    # the largest mini-batch has (equal gradient steps at the small end of the sweep)
    small_end_control: bool = True
    num_chunks: int = 4
    results_root: str = "results"
    runs_root: str = "runs"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "seeds", "num_chunks", "num_vehicles", "max_vehicles")
        check(self, "rewards", len(self.rewards) > 0 and set(self.rewards) <= set(REWARDS),
              f"must be a non-empty subset of {REWARDS}")
        check(self, "obs_type", self.obs_type in ("vector", "bev"), "must be 'vector' or 'bev'")
        check(self, "eval_rules", self.eval_rules in EVAL_RULE_SETS,
              f"must be one of {EVAL_RULE_SETS}")
        bs = self.agent.batch_size
        check(self, "minibatch_sizes", len(self.minibatch_sizes) > 0 and all(
            m > 0 and bs % m == 0 for m in self.minibatch_sizes),
            f"each must divide the rollout batch agent.num_envs * agent.num_steps = {bs}")
        check(self, "num_chunks", self.agent.num_updates % self.num_chunks == 0,
              f"must divide the agent's num_updates={self.agent.num_updates}")
        check(self, "agent", self.agent.minibatches_per_epoch == 0,
              "agent.minibatches_per_epoch is set per cell by the sweep and its controls; "
              "leave it at 0")


def _ppo(**kw) -> PPOConfig:
    """CaRL's PPO settings (PPOConfig.carl: shared LayerNorm extractor, advantages
    normalised over the rollout, BEV / 255) at CPU scale: a 128 x 128 extractor on vector
    obs, and policy / value heads of two layers as wide as the extractor (CaRL: 2 x 256
    on its 256 features; here 2 x 128, and 2 x 256 in "full"). `--agent.no-shared-torso
    --agent.no-layer-norm --agent.adv-norm minibatch --agent.policy-head-hidden
    --agent.value-head-hidden` (empty: one Dense layer per head) is the earlier layout;
    `--agent.no-clip-value` the no-value-clipping control (tyro's flag spelling)."""
    # eval_max_steps >= the env's step limit (quick preset: max_steps 2000, above the
    # leaderboard's route timeout), so every evaluation episode finishes
    # 64 evaluation episodes per seed: with 16 (the first tables) a cell's CI on driving
    # score was as wide as the differences read from it
    base = dict(hidden=(128, 128), activation="relu", normalize_obs=True,
                eval_episodes=64, eval_max_steps=2000)
    cfg = {**base, **kw}
    heads = dict(policy_head_hidden=cfg["hidden"], value_head_hidden=cfg["hidden"])
    return PPOConfig.carl(**{**heads, **cfg})


PRESETS: dict[str, CarlMinibatchConfig] = {
    "tiny": CarlMinibatchConfig(
        agent=_ppo(num_envs=8, num_steps=32, minibatch_size=64, total_timesteps=2 * 256,
                   hidden=(32, 32), eval_episodes=2),
        name="tiny", minibatch_sizes=(64, 256), seeds=2, num_chunks=2,
        results_root="runs/results_tiny"),
    # total batch 4096 = 32 envs x 128 steps; mini-batch 256 .. 4096 (16 .. 1 steps per epoch)
    "quick": CarlMinibatchConfig(
        agent=_ppo(num_envs=32, num_steps=128, minibatch_size=256, total_timesteps=4096 * 60),
        name="quick"),
    # total batch 16,384 = 64 envs x 256 steps; mini-batch 256 .. 16,384 (64 .. 1 steps per
    # epoch); ~2M env steps per seed (about 32 min on 2 CPU cores)
    "medium": CarlMinibatchConfig(
        agent=_ppo(num_envs=64, num_steps=256, minibatch_size=1024, total_timesteps=16384 * 120),
        name="medium", minibatch_sizes=(256, 512, 1024, 2048, 4096, 8192, 16384),
        # the large-end control (16,384 x 192 epochs) costs ~1-1.5 h per reward on 2 CPU
        # cores (measured at d411837); the small-end control stays on
        equal_steps_control=False),
    # CaRL's rollout (128 envs x 512 steps = 65,536) and mini-batches 2k .. 64k, one GPU
    "full": CarlMinibatchConfig(
        agent=_ppo(num_envs=128, num_steps=512, minibatch_size=16384, hidden=(256, 256),
                   total_timesteps=65536 * 300, eval_episodes=64, eval_max_steps=4000),
        name="full", minibatch_sizes=(2048, 4096, 8192, 16384, 32768, 65536), seeds=5,
        env_preset="procedural", num_vehicles=16, max_vehicles=16, num_chunks=10),
}


def make_env(cfg: CarlMinibatchConfig, reward: str, episode_end: str = "reward"):
    from envs.driving import make_driving

    return make_driving(cfg.env_preset, reward=reward, action_type="continuous",
                        obs_type=cfg.obs_type, max_vehicles=cfg.max_vehicles,
                        num_vehicles=cfg.num_vehicles, episode_end=episode_end,
                        road_users=cfg.road_users, value_inputs=True)  # CaRL's critic inputs


class Cell(NamedTuple):
    """One trained (reward, mini-batch) cell: its epochs and SGD steps per epoch."""

    reward: str
    minibatch_size: int
    update_epochs: int
    sgd_steps_per_epoch: int


KEYS = list(Cell._fields)  # the columns that name a cell in metrics.csv and table.csv


def cells(cfg: CarlMinibatchConfig) -> list[Cell]:
    """Every trained cell in table order: the sweep at the agent's epochs, then the
    equal-gradient-steps controls when enabled (large end, then small end)."""
    epochs, bs = cfg.agent.update_epochs, cfg.agent.batch_size
    out = [Cell(r, mb, epochs, bs // mb) for r in cfg.rewards for mb in cfg.minibatch_sizes]
    lo, hi = min(cfg.minibatch_sizes), max(cfg.minibatch_sizes)
    if cfg.equal_steps_control and hi > lo:
        out += [Cell(r, hi, epochs * (hi // lo), bs // hi) for r in cfg.rewards]
    if cfg.small_end_control and hi > lo:
        out += [Cell(r, lo, epochs, bs // hi) for r in cfg.rewards]
    return out


def all_minibatches(cfg: CarlMinibatchConfig, c: Cell) -> bool:
    """Whether the cell uses every mini-batch of the rollout in each epoch."""
    return c.sgd_steps_per_epoch == cfg.agent.batch_size // c.minibatch_size


def is_control(cfg: CarlMinibatchConfig, c: Cell) -> bool:
    return c.update_epochs != cfg.agent.update_epochs or not all_minibatches(cfg, c)


def cell_agent(cfg: CarlMinibatchConfig, c: Cell) -> PPOConfig:
    """The PPO config one cell trains with."""
    k = 0 if all_minibatches(cfg, c) else c.sgd_steps_per_epoch
    return dataclasses.replace(cfg.agent, minibatch_size=c.minibatch_size,
                               update_epochs=c.update_epochs, minibatches_per_epoch=k)


def gradient_steps(cfg: CarlMinibatchConfig, c: Cell) -> int:
    """Optimiser steps per seed: updates x epochs x SGD steps per epoch."""
    return cfg.agent.num_updates * c.update_epochs * c.sgd_steps_per_epoch


def cell_label(cfg: CarlMinibatchConfig, c: Cell) -> str:
    label = f"{c.reward}_mb{c.minibatch_size}"
    if c.update_epochs != cfg.agent.update_epochs:
        label += f"_ep{c.update_epochs}"
    if not all_minibatches(cfg, c):
        label += f"_k{c.sgd_steps_per_epoch}"
    return label


def with_cell_columns(cfg: CarlMinibatchConfig, df: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv of folders written before a control existed: fill the missing columns
    with the sweep's values."""
    if "update_epochs" not in df.columns:
        df = df.assign(update_epochs=cfg.agent.update_epochs)
    if "sgd_steps_per_epoch" not in df.columns:
        df = df.assign(sgd_steps_per_epoch=cfg.agent.batch_size // df["minibatch_size"])
    return df


def summary_table(ev: pd.DataFrame) -> pd.DataFrame:
    """Rows (cell, metric): mean, 95% bootstrap CI, IQM and n over seeds."""
    rows = []
    for key, g in ev.groupby(KEYS, sort=False):
        c = Cell(str(key[0]), *(int(k) for k in key[1:]))
        for m in TABLE_METRICS:
            rows.append({**c._asdict(), "metric": m,
                         **stats.summarize(g[m].to_numpy(np.float64))})
    return pd.DataFrame(rows)


def critic_ev(train: pd.DataFrame) -> pd.DataFrame:
    """Rows (cell, metric "critic_ev"): each seed's mean explained variance of the critic
    over its last EV_TAIL of updates, summarised over seeds as the table's metrics are."""
    rows = []
    if "explained_variance" not in train.columns:
        return pd.DataFrame(rows)
    for key, g in train.groupby(KEYS, sort=False):
        c = Cell(str(key[0]), *(int(k) for k in key[1:]))
        last = g["update"] > g["update"].max() * (1.0 - EV_TAIL)
        per_seed = g[last].groupby("seed")["explained_variance"].mean()
        rows.append({**c._asdict(), "metric": "critic_ev",
                     **stats.summarize(per_seed.to_numpy(np.float64))})
    return pd.DataFrame(rows)


def _rows(table: pd.DataFrame, c: Cell) -> pd.DataFrame:
    return table[(table.reward == c.reward) & (table.minibatch_size == c.minibatch_size)
                 & (table.update_epochs == c.update_epochs)
                 & (table.sgd_steps_per_epoch == c.sgd_steps_per_epoch)]


def _cell(table: pd.DataFrame, c: Cell, m: str) -> str:
    r = _rows(table, c)
    r = r[r.metric == m]
    if r.empty or not np.isfinite(r.iloc[0]["mean"]):
        return "-"
    r = r.iloc[0]
    s = 100.0 if m in PCT else 1.0
    lo, hi = r["ci_low"] * s, r["ci_high"] * s
    digits = 2 if m == "critic_ev" else 1
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else ""
    return f"{r['mean'] * s:.{digits}f}{ci}"


EVAL_RULES = {
    "leaderboard": "Evaluation episodes of both rewards follow CARLA's leaderboard rules "
                   "(envs.driving.rules): collisions and red lights are penalties, not episode "
                   "ends; a route ends when completed, on a 30 m route deviation, when blocked "
                   "for 180 s, or at its timeout (0.8 s/m + 5 s, no penalty).",
    "common": "Evaluation episodes of both rewards end under the same rules (collision, "
              "off-road, route deviation, blocked, route completed, step limit); red lights "
              "count as infractions without ending the episode.",
    "reward": "Evaluation episodes end under each reward's training rules (CaRL's also end "
              "on a red light).",
}


def markdown(table: pd.DataFrame, cfg: CarlMinibatchConfig, title: str) -> str:
    head = ["reward", "mini-batch", "epochs", "SGD steps / epoch", "gradient steps / seed",
            "driving score", "route completion (%)", "infraction score", "success (%)",
            "collision (%)", "off-road (%)", "red lights / ep",
            f"critic EV (last {EV_TAIL:.0%})"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells(cfg):
        row = [c.reward, str(c.minibatch_size), str(c.update_epochs),
               str(c.sgd_steps_per_epoch), f"{gradient_steps(cfg, c):,}"]
        row += [_cell(table, c, m) for m in (*TABLE_METRICS, "critic_ev")]
        lines.append("| " + " | ".join(row) + " |")
    control = ""
    if cfg.equal_steps_control and any(c.update_epochs != cfg.agent.update_epochs
                                       for c in cells(cfg)):
        control += (" Rows with more epochs are the equal-gradient-steps control at the "
                    "large end: the largest mini-batch trained for as many gradient steps as "
                    "the smallest.")
    if cfg.small_end_control and any(is_control(cfg, c) and c.update_epochs
                                     == cfg.agent.update_epochs for c in cells(cfg)):
        control += (" Rows of the smallest mini-batch with fewer SGD steps per epoch are the "
                    "control at the small end: only as many mini-batches of each epoch's "
                    "shuffle as the largest mini-batch has, so as many gradient steps as it.")
    lines += ["", f"Mean over {cfg.seeds} seeds of each seed's {cfg.agent.eval_episodes} "
              "held-out evaluation episodes (Beta-mean policy); [95% bootstrap CI over seeds] "
              "(mo_rl.stats; '-' where undefined). Driving score = route completion x "
              "infraction score (CARLA leaderboard penalties); rates = fraction of episodes "
              "with >= 1 such event; critic EV = explained variance of the value "
              f"head on each rollout's targets, mean over the last {EV_TAIL:.0%} of "
              "training updates. Rollout batch fixed at "
              f"{cfg.agent.num_envs} envs x {cfg.agent.num_steps} steps = "
              f"{cfg.agent.batch_size}; {cfg.agent.update_epochs} epochs; value loss "
              + (f"clipped at {cfg.agent.clip_eps}; " if cfg.agent.clip_value
                 else "NOT clipped (the no-value-clipping control); ")
              + f"{cfg.agent.total_timesteps} env steps per seed." + control + " "
              + EVAL_RULES[cfg.eval_rules]]
    return "\n".join(lines) + "\n"


def plot_sweep(table: pd.DataFrame, cfg: CarlMinibatchConfig, path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ("driving_score", "route_completion", "collision", "off_road")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, m in zip(axes, panels, strict=True):
        for reward in cfg.rewards:
            rows = table[(table.reward == reward) & (table.metric == m)]
            sweep = rows.apply(lambda r: not is_control(cfg, Cell(*(r[k] for k in KEYS))),
                               axis=1).astype(bool)
            t = rows[sweep].sort_values("minibatch_size")
            s = 100.0 if m in PCT else 1.0
            mean = t["mean"].to_numpy() * s
            lo = np.nan_to_num(mean - t["ci_low"].to_numpy() * s, nan=0.0)
            hi = np.nan_to_num(t["ci_high"].to_numpy() * s - mean, nan=0.0)
            line = ax.errorbar(t["minibatch_size"], mean,
                               yerr=[np.maximum(lo, 0), np.maximum(hi, 0)],
                               marker="o", capsize=3, label=f"{reward} reward")
            ctl = rows[~sweep]
            if not ctl.empty:  # the equal-gradient-steps controls: hollow markers
                ax.plot(ctl["minibatch_size"], ctl["mean"] * s, marker="s", ls="none",
                        mfc="none", color=line[0].get_color(),
                        label=f"{reward}, equal gradient steps")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("mini-batch size")
        ax.set_title(m + (" (%)" if m in PCT or m == "route_completion" else ""))
    axes[0].legend()
    fig.suptitle(f"PPO on envs.driving ({cfg.env_preset}): metrics vs mini-batch size "
                 f"(batch {cfg.agent.batch_size}, {cfg.seeds} seeds, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(train: pd.DataFrame, cfg: CarlMinibatchConfig, path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [c for c in ("train/driving_score", "train/route_completion") if c in train.columns]
    fig, axes = plt.subplots(len(cfg.rewards), max(1, len(panels)),
                             figsize=(6 * max(1, len(panels)), 3.5 * len(cfg.rewards)),
                             squeeze=False)
    for i, reward in enumerate(cfg.rewards):
        for j, col in enumerate(panels):
            ax = axes[i, j]
            for c in cells(cfg):
                if c.reward != reward:
                    continue
                wide = _rows(train, c).pivot_table(index="env_steps", columns="seed",
                                                    values=col, dropna=False)
                if wide.empty:
                    continue
                sm = wide.rolling(max(1, len(wide) // 20), min_periods=1).mean().mean(axis=1)
                ctl = is_control(cfg, c)
                ax.plot(sm.index, sm.values, ls="--" if ctl else "-", label=f"mb "
                        f"{c.minibatch_size}" + (f", {c.update_epochs} epochs x "
                                                 f"{c.sgd_steps_per_epoch}" if ctl else ""))
            ax.set_title(f"{reward} reward: {col}")
            ax.set_xlabel("env steps per seed")
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(cfg: CarlMinibatchConfig, argv: list[str]) -> pd.DataFrame:
    out = Path(cfg.results_root) / STUDY / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    frames, timings, kinds = [], {}, []
    # a run's reward and mini-batch are in its env and agent identity; eval_rules only
    # changes the held-out episodes (a resume may re-evaluate under other rules)
    study_id = study_identity(cfg, drop=("rewards", "minibatch_sizes", "eval_rules",
                                         "equal_steps_control", "small_end_control"))
    # a resumed study whose runs were complete only re-evaluates: keep their training times
    old = out / "timings.json"
    old_runs = json.loads(old.read_text()).get("runs", {}) if cfg.resume and old.exists() else {}
    t_all = time.perf_counter()
    envs = {r: (make_env(cfg, r), make_env(cfg, r, episode_end=cfg.eval_rules)[0])
            for r in cfg.rewards}
    for c in cells(cfg):
        (env, params), eval_env = envs[c.reward]
        acfg = cell_agent(cfg, c)
        label = cell_label(cfg, c)
        print(f"[{label}] {env.name}: {cfg.seeds} seeds x {acfg.total_timesteps} steps, "
              f"{c.update_epochs} epochs x {c.sgd_steps_per_epoch} x {c.minibatch_size} "
              f"({gradient_steps(cfg, c):,} gradient steps per seed)", flush=True)
        t0 = time.perf_counter()
        res = run(lambda c, env=env, params=params, ev=eval_env: make_agent(
                      c, env, params, eval_env=ev), acfg,
                  seeds=range(cfg.seeds), study=STUDY, run_name=f"{cfg.name}/{label}",
                  num_chunks=cfg.num_chunks, resume=cfg.resume, overwrite=not cfg.resume,
                  objectives=env.reward_spec.names, runs_root=cfg.runs_root,
                  results_root=cfg.results_root, progress=cfg.progress,
                  table_metrics=list(TABLE_METRICS), title=f"{STUDY} / {label}",
                  identity={"env": env_identity(env, params), "study": study_id})
        kinds.append(res.info["kind"])
        timings[label] = run_timing(res.info, time.perf_counter() - t0, cfg.num_chunks,
                                    old_runs.get(label))
        frames.append(res.metrics.assign(**c._asdict()))
    df = pd.concat(frames, ignore_index=True)
    df = df[KEYS + [k for k in df.columns if k not in KEYS]]
    df.to_csv(out / "metrics.csv", index=False)
    # the tables from the stored metrics (float32 values as written), so that
    # scripts/make_tables.py rebuilds them identically
    df = pd.read_csv(out / "metrics.csv", low_memory=False)
    table = summary_table(df[df.phase == "eval"])
    texts = tables(cfg, df)
    for name, text in texts.items():
        (out / name).write_text(text)
    md = texts["table.md"]
    plot_sweep(table, cfg, out / "minibatch.png")
    plot_curves(df[df.phase == "train"], cfg, out / "curves.png")
    save_config(cfg, out / "study.json")
    write_study_provenance(out, study=STUDY, kinds=kinds)
    total = {"total_s": round(time.perf_counter() - t_all, 1)}
    if old_runs and all("re_evaluated_wall_s" in t for t in timings.values()):
        prev = json.loads(old.read_text())
        total = {"total_s": prev["total_s"], "re_evaluated_total_s": total["total_s"],
                 "trained_code_version": prev.get("code_version")}
    (out / "timings.json").write_text(json.dumps(
        {**total, "runs": timings,
         "device": device_info(), "code_version": code_version()}, indent=2, default=str) + "\n")
    print(md)
    print(f"wrote {out}")
    return table


def tables(cfg: CarlMinibatchConfig, df: pd.DataFrame) -> dict[str, str]:
    """table.csv and table.md from the study's metrics (every run's rows)."""
    df = with_cell_columns(cfg, df)
    table = pd.concat([summary_table(df[df.phase == "eval"]),
                       critic_ev(df[df.phase == "train"])], ignore_index=True)
    users = "walkers, parked cars and stop signs" if cfg.road_users else "no road users"
    title = (f"CaRL vs Roach reward across mini-batch sizes: PPO on envs.driving "
             f"({cfg.env_preset}, {cfg.num_vehicles} vehicles, {users}, {cfg.obs_type} obs, "
             "continuous Beta policy)")
    return {"table.csv": table.to_csv(index=False), "table.md": markdown(table, cfg, title)}


def rebuild_tables(out: str | Path) -> dict[str, str]:
    """The study tables of a results folder, from its study.json and metrics.csv."""
    out = Path(out)
    cfg = load_config(CarlMinibatchConfig, out / "study.json")
    df = pd.read_csv(out / "metrics.csv", low_memory=False)
    if "update_epochs" not in df.columns:  # written before the equal-gradient-steps control
        cfg = dataclasses.replace(cfg, equal_steps_control=False)
    if "sgd_steps_per_epoch" not in df.columns:  # written before the small-end control
        cfg = dataclasses.replace(cfg, small_end_control=False)
    return tables(cfg, df)


def carla_main(cfg: CarlMinibatchConfig, opts, argv: list[str]) -> None:
    """`--env carla` (experiments.carla): the study on CARLA servers, or `--eval-only`: each
    cell's (sweep and controls) trained checkpoint (simulator) scored on CARLA under
    `eval_rules`."""
    from experiments import carla

    def carla_env(cfg: CarlMinibatchConfig, reward: str, episode_end: str = "reward"):
        return opts.env(cfg.seeds * cfg.agent.num_envs, reward=reward,
                        action_type="continuous", obs_type=cfg.obs_type,
                        max_vehicles=cfg.max_vehicles, episode_end=episode_end,
                        value_inputs=True)  # as make_env: the critic's inputs

    if not opts.eval_only:
        global make_env
        make_env = carla_env
        return main(cfg, argv)
    runs = {}
    for reward in cfg.rewards:
        env, params = make_env(cfg, reward)
        ev, ev_params = carla_env(cfg, reward, cfg.eval_rules)
        horizon = max(cfg.agent.eval_max_steps, int(ev_params.max_steps))
        for c in (c for c in cells(cfg) if c.reward == reward):  # sweep and controls
            acfg = cell_agent(cfg, c)
            runs[cell_label(cfg, c)] = (
                lambda a=acfg, e=env, p=params: make_agent(a, e, p),
                lambda a=acfg, e=env, p=params, v=ev, h=horizon: make_agent(
                    dataclasses.replace(a, eval_max_steps=h), e, p, eval_env=v))
    carla.eval_only(STUDY, cfg.name, opts, cfg.seeds, runs, TABLE_METRICS)


if __name__ == "__main__":
    from experiments.carla import study_main

    study_main(CarlMinibatchConfig, PRESETS, main, carla_main, __doc__, sys.argv[1:])
