"""HERON study: a ranking of reward factors vs tuned weighted sums, with the same PPO.

    python -m experiments.heron --preset pendulum   # (a) + (b): 3 factor scales x 6 rewards
    python -m experiments.heron --preset driving    # (c): driving sim, small CPU preset
    python -m experiments.heron --preset tiny       # smoke test (seconds)

Rewards compared, every one trained by the same PPO (agents.ppo, Beta policy) and the
same seeds (vmapped, chunked and checkpointed by mo_rl.runner):
* heron:    HERON (agents.heron): a Bradley-Terry reward model learns from
            decision-tree comparisons over the env's ranking (Pendulum: theta2 >
            theta_dot2 > torque2; driving: safety > rules > progress > comfort);
* rlhf_sum: the same reward model, but preferences come from the plain (unweighted)
            oriented factor sum (the paper's RLHF baseline);
* linear:   the heuristic weighted sum -f0 - b f1 - b^2 f2 (- b^3 f3) over a grid of b
            (the paper's family; one vmapped program for the whole grid). The "tuned"
            linear reward is the grid's best b by mean score, picked on the same
            evaluation episodes (optimistic for the baseline).
HERON's own knob is the margin scale sigma (margins sigma x std): `extra_sigmas` adds
HERON runs at other values (method "heron_sigma<value>").
Robustness (pendulum preset): the whole comparison is repeated with one factor
(`scaled_factor`) multiplied by each of `scales` (HERON's ranking and margins, which
are sigma x std, do not change; the weighted sum's optimum does).

Metric: Pendulum: the TRUE Gymnasium return of held-out greedy episodes
(envs.classic.gym_reward of the factor returns, scale undone), whatever reward the
learner saw; driving: the leaderboard metrics of held-out episodes under CARLA's
leaderboard rules (envs.driving.rules).

Writes results/heron/<name>/: table.md / table.csv (mean, 95% bootstrap CI over seeds,
mo_rl.stats), curves.png (training true return / driving score), sensitivity.png
(score vs b per scale, HERON and RLHF as bands), metrics.csv (every run's rows),
study.json (config), timings.json, provenance.json + command.txt, and one runner folder
per run. `rebuild_tables(folder)` recomputes the tables (scripts/make_tables.py --check).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.heron import HeronConfig, make_linear_ppo, make_ppo
from agents.ppo import PPOConfig
from mo_rl import stats
from mo_rl.config import check, check_positive, cli, load_config, save_config
from mo_rl.results import code_version, device_info, write_study_provenance
from mo_rl.reward_model import RewardModelConfig
from mo_rl.runner import env_identity, run, run_timing, study_identity

STUDY = "heron"
METHODS = ("heron", "rlhf_sum", "linear")
TASKS = ("pendulum", "driving")
DRIVING_METRICS = ("driving_score", "route_completion", "infraction_score", "success",
                   "collision", "red_light")


@dataclass(frozen=True)
class HeronStudyConfig:
    """One PPO config and one reward-model config for every reward of the study."""

    agent: PPOConfig
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    task: str = "pendulum"  # "pendulum" (a, b) | "driving" (c)
    name: str = "pendulum"  # results/heron/<name>/
    seeds: int = 5
    methods: tuple[str, ...] = METHODS
    b_grid: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)  # linear: weights b^level
    # further HERON runs with reward_model.sigma replaced by each value ("heron_sigma<s>")
    extra_sigmas: tuple[float, ...] = ()
    scales: tuple[float, ...] = (1.0,)  # pendulum: multiplies `scaled_factor`
    scaled_factor: str = "theta_dot2"
    env_preset: str = "quick"  # driving: envs.driving preset
    num_vehicles: int = 8
    num_chunks: int = 4
    resume: bool = False
    progress: bool = True
    runs_root: str = "runs"
    results_root: str = "results"

    def __post_init__(self) -> None:
        check_positive(self, "seeds", "num_chunks", "num_vehicles")
        check(self, "task", self.task in TASKS, f"must be one of {TASKS}")
        check(self, "methods", len(self.methods) > 0 and set(self.methods) <= set(METHODS),
              f"must be a non-empty subset of {METHODS}")
        check(self, "extra_sigmas", all(x >= 0 for x in self.extra_sigmas),
              "values must be >= 0")
        check(self, "b_grid", len(self.b_grid) > 0 and all(b > 0 for b in self.b_grid),
              "needs one or more values > 0")
        check(self, "scales", len(self.scales) > 0 and all(s > 0 for s in self.scales),
              "needs one or more values > 0")
        check(self, "scales", self.task == "pendulum" or tuple(self.scales) == (1.0,),
              "rescaling is a pendulum study; the driving task takes (1.0,)")
        check(self, "num_chunks", self.agent.num_updates % self.num_chunks == 0,
              f"must divide the agent's num_updates={self.agent.num_updates}")


# PPO's Pendulum settings (PPOConfig.pendulum) except the minibatch: 16 envs x 128 steps =
# 2048 steps per rollout (the reference's n_steps) and its reward-model minibatch of 64
_PENDULUM_RM = RewardModelConfig(hidden=(256, 256), lr=1e-3, sigma=(1.0,),
                                 inputs=("obs", "factors"), normalize=True, minibatch=64)
_DRIVING_RM = RewardModelConfig(hidden=(256, 256), lr=1e-3, sigma=(0.5,),
                                inputs=("obs", "factors"), normalize=True, minibatch=64)


def _driving_ppo(**kw) -> PPOConfig:
    """carl_minibatch's CPU-scale PPO (CaRL settings, 128 x 128 extractor, vector obs)."""
    base = dict(hidden=(128, 128), activation="relu", normalize_obs=True, eval_episodes=16,
                eval_max_steps=2000)
    return PPOConfig.carl(**{**base, **kw})


PRESETS: dict[str, HeronStudyConfig] = {
    "tiny": HeronStudyConfig(
        agent=PPOConfig.pendulum(total_timesteps=2 * 256, num_envs=4, num_steps=64,
                                 minibatch_size=128, update_epochs=2, hidden=(16, 16),
                                 eval_episodes=2, eval_max_steps=200),
        reward_model=dataclasses.replace(_PENDULUM_RM, hidden=(16,)),
        name="tiny", seeds=2, b_grid=(0.1, 1.0), scales=(1.0, 10.0), num_chunks=2,
        results_root="runs/results_tiny"),
    # (a) + (b): 3 scales x (HERON, RLHF, 4 weighted sums) x 5 seeds, 300k steps per seed
    "pendulum": HeronStudyConfig(
        agent=PPOConfig.pendulum(total_timesteps=2048 * 150, eval_episodes=10,
                                 eval_max_steps=200),
        reward_model=_PENDULUM_RM, name="pendulum", seeds=5, b_grid=(0.1, 0.3, 1.0, 3.0),
        scales=(1.0, 10.0, 0.1), num_chunks=5, extra_sigmas=(0.1,)),
    # (c): ranking safety > rules > progress > comfort vs weighted sums (1, b, b^2, b^3)
    "driving": HeronStudyConfig(
        agent=_driving_ppo(num_envs=32, num_steps=128, minibatch_size=1024,
                           total_timesteps=4096 * 32),
        reward_model=_DRIVING_RM, task="driving", name="driving", seeds=5,
        b_grid=(0.1, 0.3, 1.0), num_chunks=4, extra_sigmas=(0.1,)),
}


# ----------------------------------------------------------------------------- envs
def make_env(cfg: HeronStudyConfig, scale: float = 1.0, episode_end: str = "reward"):
    """(env, params) of the task; pendulum: `scaled_factor` multiplied by `scale`."""
    if cfg.task == "pendulum":
        from envs.classic import FactoredPendulum

        env = FactoredPendulum()
        fs = [1.0, 1.0, 1.0]
        fs[env.reward_spec.index(cfg.scaled_factor)] = float(scale)
        return env, env.default_params.replace(factor_scale=tuple(fs))
    from envs.driving import make_driving

    return make_driving(cfg.env_preset, reward="vector", action_type="continuous",
                        obs_type="vector", max_vehicles=cfg.num_vehicles,
                        num_vehicles=cfg.num_vehicles, episode_end=episode_end)


def geometric_weights(k: int):
    """w = (1, b, b^2, ..., b^(k-1)) for a grid point {"b": b} (the paper's family)."""
    powers = np.arange(k, dtype=np.float32)
    return lambda point: point["b"] ** powers


def score_columns(cfg: HeronStudyConfig) -> tuple[str, ...]:
    return ("true_return",) if cfg.task == "pendulum" else DRIVING_METRICS


def add_true_return(df: pd.DataFrame, names: tuple[str, ...], scale: float,
                    scaled_factor: str) -> pd.DataFrame:
    """true_return = Gymnasium's return from the factor returns (the scale undone)."""
    from envs.classic import PENDULUM_WEIGHTS

    w = np.asarray(PENDULUM_WEIGHTS, np.float64)
    s = np.ones(len(names))
    s[names.index(scaled_factor)] = scale
    cols = [f"episode_return/{n}" for n in names]
    return df.assign(true_return=-(df[cols].to_numpy(np.float64) / s) @ w)


# --------------------------------------------------------------------------- tables
def summary_table(df: pd.DataFrame, cfg: HeronStudyConfig) -> pd.DataFrame:
    """Rows (scale, method, b, metric): mean, 95% bootstrap CI, n, std, IQM over seeds."""
    ev = df[df.phase == "eval"]
    rows = []
    for (scale, method, b), g in ev.groupby(["scale", "method", "b"], sort=False,
                                             dropna=False):
        for m in score_columns(cfg):
            rows.append({"scale": scale, "method": method, "b": b, "metric": m,
                         **stats.summarize(g[m].to_numpy(np.float64))})
    # the reward model's held-out pairwise accuracy (fresh rollout, scored before training
    # on it), per seed averaged over the last 10% of updates
    tr = df[(df.phase == "train") & (df.method != "linear")]
    if "rm_heldout_accuracy" in tr.columns:
        for (scale, method), g in tr.groupby(["scale", "method"], sort=False):
            last = g[g["update"] >= 0.9 * g["update"].max()]
            per_seed = last.groupby("seed")["rm_heldout_accuracy"].mean()
            rows.append({"scale": scale, "method": method, "b": np.nan,
                         "metric": "rm_heldout_accuracy",
                         **stats.summarize(per_seed.to_numpy(np.float64))})
    return pd.DataFrame(rows)


def _fmt(r: pd.Series, pct: bool = False) -> str:
    s = 100.0 if pct else 1.0
    if not np.isfinite(r["mean"]):
        return "-"
    ci = f" [{r['ci_low'] * s:.1f}, {r['ci_high'] * s:.1f}]" if np.isfinite(r["ci_low"]) else ""
    return f"{r['mean'] * s:.1f}{ci}"


def _label(method: str, b: float) -> str:
    return f"linear b={b:g}" if method == "linear" else method


def best_linear(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per scale, the linear row with the highest mean `metric` (the tuned weighted sum)."""
    t = table[(table.method == "linear") & (table.metric == metric)]
    return t.loc[t.groupby("scale", sort=False)["mean"].idxmax()] if len(t) else t


def markdown(table: pd.DataFrame, cfg: HeronStudyConfig) -> str:
    lines = []
    acc = table[table.metric == "rm_heldout_accuracy"]
    table = table[table.metric != "rm_heldout_accuracy"]
    if cfg.task == "pendulum":
        head = ["reward"] + [f"{cfg.scaled_factor} x {s:g}" for s in cfg.scales]
        lines += ["### HERON vs weighted sums on Pendulum: true Gymnasium return of greedy "
                  "episodes (higher is better)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        t = table[table.metric == "true_return"]
        keys = t[["method", "b"]].drop_duplicates().itertuples(index=False)
        for method, b in keys:
            cells = [_label(method, b)]
            for s in cfg.scales:
                same_b = (t.b == b) | (t.b.isna() & pd.isna(b))
                r = t[(t.scale == s) & (t.method == method) & same_b]
                cells.append(_fmt(r.iloc[0]) if len(r) else "-")
            lines.append("| " + " | ".join(cells) + " |")
        best = best_linear(table, "true_return")
        if len(best):
            lines.append("| best linear (tuned b) | " + " | ".join(
                f"{_fmt(best[best.scale == s].iloc[0])} (b={best[best.scale == s].iloc[0]['b']:g})"
                if (best.scale == s).any() else "-" for s in cfg.scales) + " |")
        lines += ["", f"Mean over {cfg.seeds} seeds of each seed's {cfg.agent.eval_episodes} "
                  "held-out greedy (Beta-mean) episodes of 200 steps; [95% bootstrap CI over "
                  "seeds] (mo_rl.stats). Linear: reward -f0 - b f1 - b^2 f2 on the factors "
                  f"as the learner sees them (theta2, theta_dot2, torque2; {cfg.scaled_factor} "
                  "multiplied by the column's scale); Gymnasium's own weights are "
                  "(1, 0.1, 0.001). Same PPO for every row: "
                  f"{cfg.agent.total_timesteps} env steps per seed, "
                  f"{cfg.agent.num_envs} envs x {cfg.agent.num_steps} steps per rollout."]
    else:
        head = ["reward", "driving score", "route completion (%)", "infraction score",
                "success (%)", "collision (%)", "red lights / ep"]
        lines += ["### HERON (safety > rules > progress > comfort) vs weighted sums on "
                  "envs.driving, leaderboard metrics", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        keys = table[["method", "b"]].drop_duplicates().itertuples(index=False)
        for method, b in keys:
            cells = [_label(method, b)]
            for m in DRIVING_METRICS:
                r = table[(table.method == method) & (table.metric == m)
                          & ((table.b == b) | (table.b.isna() & pd.isna(b)))]
                cells.append(_fmt(r.iloc[0], m in ("success", "collision")) if len(r) else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Mean over {cfg.seeds} seeds of each seed's {cfg.agent.eval_episodes} "
                  "held-out episodes (Beta-mean policy) under CARLA's leaderboard rules; "
                  "[95% bootstrap CI over seeds]. Linear: weights (1, b, b^2, b^3) on "
                  "(safety, rules, progress, comfort). Small CPU preset: "
                  f"{cfg.env_preset} map, {cfg.num_vehicles} vehicles, "
                  f"{cfg.agent.total_timesteps} env steps per seed."]
    if len(acc):
        lines += ["", "Reward-model pairwise accuracy on held-out pairs (each new rollout, "
                  "scored before the model trains on it; labels from the method's own "
                  "comparisons), per seed averaged over the last 10% of updates:", ""]
        lines += [f"- {r.method}, scale {r.scale:g}: {_fmt(pd.Series(r._asdict()), True)} %"
                  for r in acc.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def tables(cfg: HeronStudyConfig, df: pd.DataFrame) -> dict[str, str]:
    table = summary_table(df, cfg)
    return {"table.csv": table.to_csv(index=False), "table.md": markdown(table, cfg)}


def rebuild_tables(out: str | Path) -> dict[str, str]:
    """The study tables of a results folder, from its study.json and metrics.csv."""
    out = Path(out)
    return tables(load_config(HeronStudyConfig, out / "study.json"),
                  pd.read_csv(out / "metrics.csv"))


# ---------------------------------------------------------------------------- plots
def plot_curves(df: pd.DataFrame, cfg: HeronStudyConfig, path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = "true_return" if cfg.task == "pendulum" else "train/driving_score"
    tr = df[df.phase == "train"]
    fig, axes = plt.subplots(1, len(cfg.scales), figsize=(5.5 * len(cfg.scales), 3.8),
                             squeeze=False)
    for ax, s in zip(axes[0], cfg.scales, strict=True):
        d = tr[tr.scale == s]
        for (method, b), g in d.groupby(["method", "b"], sort=False, dropna=False):
            wide = g.pivot_table(index="env_steps", columns="seed", values=col, dropna=False)
            if wide.empty:
                continue
            sm = wide.rolling(max(1, len(wide) // 15), min_periods=1).mean()
            mean = sm.mean(axis=1)
            ax.plot(mean.index, mean.values, label=_label(method, b),
                    lw=2 if method != "linear" else 1)
        ax.set_title(f"{cfg.scaled_factor} x {s:g}" if cfg.task == "pendulum" else cfg.name)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("true return (training episodes)" if cfg.task == "pendulum" else col)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"heron/{cfg.name}: learning curves, mean over {cfg.seeds} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sensitivity(table: pd.DataFrame, cfg: HeronStudyConfig, path: Path) -> None:
    """Score of the weighted sum vs b (one line per scale), HERON / RLHF as bands."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = score_columns(cfg)[0]
    t = table[table.metric == m]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(cfg.scales):
        c = colors[i % len(colors)]
        lin = t[(t.scale == s) & (t.method == "linear")].sort_values("b")
        if len(lin):
            err = [np.maximum(lin["mean"] - lin["ci_low"], 0).fillna(0),
                   np.maximum(lin["ci_high"] - lin["mean"], 0).fillna(0)]
            ax.errorbar(lin["b"], lin["mean"], yerr=err, marker="o", capsize=3, color=c,
                        label=f"linear, scale {s:g}")
        others = [m for m in t.method.unique() if m != "linear"]
        for method, ls in zip(others, ("-", ":", "--", "-."), strict=False):
            r = t[(t.scale == s) & (t.method == method)]
            if len(r):
                r = r.iloc[0]
                ax.axhline(r["mean"], color=c, ls=ls, label=f"{method}, scale {s:g}")
                if np.isfinite(r["ci_low"]):
                    ax.axhspan(r["ci_low"], r["ci_high"], color=c, alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("b (weights 1, b, b^2, ...)")
    ax.set_ylabel(m)
    ax.legend(fontsize=7)
    ax.set_title(f"heron/{cfg.name}: weight sensitivity ({cfg.seeds} seeds, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> pd.DataFrame:
    """The study from the command line (`--preset NAME` + any field override)."""
    return run_study(cli(HeronStudyConfig, PRESETS, default_preset="pendulum",
                         args=sys.argv[1:] if argv is None else argv, description=__doc__))


def run_study(cfg: HeronStudyConfig) -> pd.DataFrame:
    out = Path(cfg.results_root) / STUDY / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    frames, timings, kinds = [], {}, []
    study_id = study_identity(cfg, drop=("methods", "scales", "b_grid", "extra_sigmas"))
    runs = [(m, None) for m in cfg.methods] + [
        (f"heron_sigma{x:g}", x) for x in cfg.extra_sigmas]
    # a resumed study whose runs were complete only re-evaluates: keep their training times
    old = out / "timings.json"
    old_runs = json.loads(old.read_text()).get("runs", {}) if cfg.resume and old.exists() else {}
    t_all = time.perf_counter()
    for scale in cfg.scales:
        env, params = make_env(cfg, scale)
        eval_env = make_env(cfg, scale, "leaderboard")[0] if cfg.task == "driving" else None
        names = env.reward_spec.names
        for method, sigma in runs:
            label = f"s{scale:g}/{method}"
            if method == "linear":
                wfn = geometric_weights(len(names))
                make = (lambda c, env=env, params=params, ev=eval_env, wfn=wfn:
                        make_linear_ppo(c, env, wfn, params, eval_env=ev))
                grid = {"b": list(cfg.b_grid)}
            else:
                labels = "sum" if method == "rlhf_sum" else "hierarchy"
                rm = dataclasses.replace(cfg.reward_model, labels=labels)
                if sigma is not None:
                    rm = dataclasses.replace(rm, sigma=(sigma,))
                heron = HeronConfig(rm)
                make = (lambda c, env=env, params=params, ev=eval_env, h=heron:
                        make_ppo(c, h, env, params, eval_env=ev))
                grid = None
            print(f"[{label}] {env.name}: {cfg.seeds} seeds x "
                  f"{len(cfg.b_grid) if grid else 1} x {cfg.agent.total_timesteps} steps",
                  flush=True)
            t0 = time.perf_counter()
            res = run(make, cfg.agent, seeds=range(cfg.seeds), study=STUDY,
                      run_name=f"{cfg.name}/{label}", num_chunks=cfg.num_chunks,
                      resume=cfg.resume, overwrite=not cfg.resume, grid=grid,
                      objectives=names, runs_root=cfg.runs_root,
                      results_root=cfg.results_root, progress=cfg.progress,
                      title=f"{STUDY} / {label}",
                      identity={"env": env_identity(env, params), "study": study_id,
                                "method": method})
            kinds.append(res.info["kind"])
            timings[label] = run_timing(res.info, time.perf_counter() - t0, cfg.num_chunks,
                                        old_runs.get(label))
            df = res.metrics
            if "b" not in df.columns:
                df = df.assign(b=np.nan)
            df = df.assign(scale=scale, method=method)
            if cfg.task == "pendulum":
                df = add_true_return(df, names, scale, cfg.scaled_factor)
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    lead = ["scale", "method", "b"]
    df = df[lead + [c for c in df.columns if c not in lead]]
    df.to_csv(out / "metrics.csv", index=False)
    save_config(cfg, out / "study.json")
    texts = rebuild_tables(out)  # from the stored files, as make_tables --check does
    for name, text in texts.items():
        (out / name).write_text(text)
    table = pd.read_csv(out / "table.csv")
    plot_curves(df, cfg, out / "curves.png")
    plot_sensitivity(table, cfg, out / "sensitivity.png")
    write_study_provenance(out, study=STUDY, kinds=kinds)
    (out / "timings.json").write_text(json.dumps(
        {"total_s": round(time.perf_counter() - t_all, 1), "runs": timings,
         "device": device_info(), "code_version": code_version()}, indent=2, default=str)
        + "\n")
    print(texts["table.md"])
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    main()
