"""Pr-IQN vs IQN vs ensemble-IQN on the pure-JAX driving simulator (paper-style table).

    python -m experiments.driving_pr_iqn --preset quick      # 30-50 min on 2 CPU cores
    python -m experiments.driving_pr_iqn --preset medium     # 4x quick's steps, ~1 h+
    python -m experiments.driving_pr_iqn --preset full       # one GPU
    python -m experiments.driving_pr_iqn --preset tiny       # smoke test (seconds)

Setting: envs.driving with discrete meta-actions (target speed x lateral
offset) and the vector reward (safety > rules > progress > comfort). Pr-IQN
learns one quantile head per objective and acts / bootstraps with the
optimal subset of mo_rl.dominance. The baselines see the same preorder two
ways: `iqn` / `ensemble` learn a weighted sum of the vector reward whose
weights are chosen by a small sweep (`weight_grid`: IQN per weight vector on
SELECTION seeds that the final table never uses; best mean driving score
wins) or, without a grid, `weights`; `iqn_lex` / `ensemble_lex` learn its
lexicographic scalarisation (mo_rl.scalarize.lexicographic_weights, scaled
so the top level weighs 1). `sensitivity` re-runs Pr-IQN with other (rho,
eps scale, tie-break) settings on the main seeds. Every method trains the
same seeds (vmapped, mo_rl.runner: chunked, checkpointed under runs/), then
runs held-out evaluation episodes with its greedy policy.

Writes results/driving_pr_iqn/<preset>/:
  table.md / table.csv   success, collision, off-road rate, route completion,
                         driving score: mean and 95% bootstrap CI over seeds
  significance.md        Pr-IQN vs each baseline per metric (Welch t and
                         Mann-Whitney U over seeds, mo_rl.stats.compare)
  weight_sweep.md / .json  the weight sweep on the selection seeds and the
                         weights it chose (when weight_grid is set)
  sensitivity.md         Pr-IQN under each sensitivity setting (when set)
  curves.png             training curves (episode return per objective,
                         collision / success rate of finished training episodes)
  provenance.json + command.txt (every command that produced the folder, each with
  its code version), study.json, and one runner results dir per method
  (<method>/: config, code version, device, metrics.csv, its own table).
  `rebuild_tables(folder)` recomputes the study tables (scripts/make_tables.py).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pandas as pd

import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.iqn import IQNConfig, make_agent
from agents.iqn import preset as iqn_preset
from mo_rl import stats
from mo_rl.config import check, check_positive, load_config, save_config
from mo_rl.dominance import TIE_BREAKS
from mo_rl.results import write_study_provenance
from mo_rl.runner import env_identity, run, study_identity

STUDY = "driving_pr_iqn"
METHODS = ("pr_iqn", "iqn", "ensemble", "iqn_lex", "ensemble_lex")
# method -> (IQN variant, how the baseline scalarises the vector reward)
METHOD_KIND = {"pr_iqn": ("pr_iqn", None), "iqn": ("iqn", "weights"),
               "ensemble": ("ensemble", "weights"), "iqn_lex": ("iqn", "lexicographic"),
               "ensemble_lex": ("ensemble", "lexicographic")}

TABLE_METRICS = ("success", "collision", "off_road", "route_completion", "driving_score")
LOWER_IS_BETTER = {"collision", "off_road"}


@dataclass(frozen=True)
class DrivingStudyConfig:
    """One study run: the agent config shared by all methods, seeds, env choice."""

    agent: IQNConfig
    name: str = "quick"  # results/driving_pr_iqn/<name>/
    methods: tuple[str, ...] = METHODS
    seeds: int = 5
    env_preset: str = "quick"  # envs.driving preset
    num_vehicles: int = 8
    max_vehicles: int = 8
    # envs.driving.ROAD_USERS (walkers, parked cars, stop signs): the rare catastrophes
    # Pr-IQN is meant to avoid; false is the world of the first tables
    road_users: bool = False
    # weighted-sum view of (safety, rules, progress, comfort) for IQN / ensemble-IQN,
    # used as given when weight_grid is empty
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    # where fixed `weights` come from (printed under the table), e.g. another preset's sweep
    weights_from: str = ""
    # candidate weights: IQN trains each on `selection_seeds` seeds starting at
    # `selection_seed_offset` (disjoint from the table's seeds 0..seeds-1); the best mean
    # driving score (ties: fewer collisions) becomes the weights of iqn and ensemble
    weight_grid: tuple[tuple[float, ...], ...] = ()
    selection_seeds: int = 3
    selection_seed_offset: int = 1000
    lex_resolution: float = 0.01  # mo_rl.scalarize.lexicographic's resolution
    # Pr-IQN sensitivity: (rho for every level, eps scale on the agent's dominance_eps,
    # tie-break) per extra Pr-IQN run on the table's seeds
    sensitivity: tuple[tuple[float, float, str], ...] = ()
    num_chunks: int = 5
    results_root: str = "results"
    runs_root: str = "runs"
    resume: bool = False

    def __post_init__(self) -> None:
        check_positive(self, "seeds", "num_chunks", "num_vehicles", "max_vehicles")
        check(self, "methods", len(self.methods) > 0 and set(self.methods) <= set(METHODS),
              f"must be a non-empty subset of {METHODS}")
        check(self, "weights", len(self.weights) == 4, "needs 4 values (one per objective)")
        check(self, "weight_grid", all(len(w) == 4 and min(w) >= 0 for w in self.weight_grid),
              "each entry needs 4 non-negative values (one per objective)")
        check_positive(self, "selection_seeds", "lex_resolution")
        check(self, "selection_seed_offset", self.selection_seed_offset >= self.seeds,
              f"must be >= seeds={self.seeds} so selection seeds never enter the table")
        check(self, "sensitivity", all(
            len(t) == 3 and 0 < t[0] <= 1 and t[1] >= 0 and t[2] in TIE_BREAKS
            for t in self.sensitivity),
            f"each entry is (rho in (0, 1], eps scale >= 0, tie-break in {TIE_BREAKS})")
        check(self, "num_chunks", self.agent.num_updates % self.num_chunks == 0,
              f"must divide the agent's num_updates={self.agent.num_updates}")


# Pr-IQN settings shared by the presets: rho and eps per objective (return units:
# safety/rules penalties are ~1 per event, progress ~0.1 per metre, comfort <= 0).
PR_KW = dict(rho=(0.75, 0.75, 0.75, 0.75), dominance_eps=(0.05, 0.05, 0.1, 0.05),
             tie_break="lowest_level_mean")

# the weighted-sum candidates: unit weights make one collision (-1) worth 7-12 steps of
# progress, so the sweep raises the safety and rule weights
WEIGHT_GRID = ((1.0, 1.0, 1.0, 1.0), (10.0, 3.0, 1.0, 1.0), (30.0, 10.0, 1.0, 1.0))
# (rho, eps scale, tie-break) around PR_KW: rho down and up to weak FSD, eps halved and
# doubled, and the plain mean as tie-break
SENSITIVITY = ((0.6, 1.0, "lowest_level_mean"), (1.0, 1.0, "lowest_level_mean"),
               (0.75, 0.5, "lowest_level_mean"), (0.75, 2.0, "lowest_level_mean"),
               (0.75, 1.0, "mean"))

PRESETS: dict[str, DrivingStudyConfig] = {
    "tiny": DrivingStudyConfig(
        agent=iqn_preset("driving_quick", total_timesteps=640, num_envs=4, steps_per_update=4,
                         learning_starts=128, buffer_size=2_048, batch_size=32, ensemble_size=2,
                         hidden=(32, 32), head_hidden=32, num_tau=8, num_tau_prime=8,
                         num_tau_act=8, eval_episodes=4, eval_max_steps=2_000, **PR_KW),
        name="tiny", seeds=2, num_chunks=2, results_root="runs/results_tiny"),
    "quick": DrivingStudyConfig(
        agent=iqn_preset("driving_quick", ensemble_size=3, eval_max_steps=2_000, **PR_KW),
        name="quick", seeds=5, weight_grid=WEIGHT_GRID, sensitivity=SENSITIVITY,
        road_users=True),
    # 4x quick's budget (the quick curves still move at 40k steps), the five methods only:
    # the weighted sum reuses the weights quick's sweep chose on its selection seeds
    # 1000-1002 (never table seeds), and the sensitivity table stays with quick
    "medium": DrivingStudyConfig(
        agent=iqn_preset("driving_quick", total_timesteps=160_000, ensemble_size=3,
                         eval_max_steps=2_000, **PR_KW),
        name="medium", seeds=5, weights=(10.0, 3.0, 1.0, 1.0),
        weights_from="quick's weight sweep on selection seeds 1000-1002 "
                     "(results/driving_pr_iqn/quick/weight_sweep.md)",
        road_users=True),
    "full": DrivingStudyConfig(
        agent=iqn_preset("driving_full", ensemble_size=5, eval_max_steps=4_000, **PR_KW),
        name="full", seeds=10, weight_grid=WEIGHT_GRID, sensitivity=SENSITIVITY,
        road_users=True,
        env_preset="procedural", num_vehicles=16, max_vehicles=16, num_chunks=20),
}


def make_env(cfg: DrivingStudyConfig, seed: int = 0):
    from envs.driving import make_driving

    return make_driving(cfg.env_preset, reward="vector", action_type="discrete",
                        obs_type="vector", max_vehicles=cfg.max_vehicles,
                        num_vehicles=cfg.num_vehicles, seed=seed, road_users=cfg.road_users)


def check_eval_horizon(cfg: DrivingStudyConfig, params) -> None:
    """Evaluation must not stop episodes before the env's own step cap: the episode metrics
    are averaged over FINISHED episodes, so a shorter horizon would drop the long (often
    safe) episodes and bias every rate towards early crashes."""
    cap = int(params.max_steps)
    check(cfg.agent, "eval_max_steps", cfg.agent.eval_max_steps >= cap,
          f"must be >= the driving env's max_steps={cap} (env preset {cfg.env_preset!r})")


def lexicographic_weights(cfg: DrivingStudyConfig) -> tuple[float, ...]:
    """The preorder's lexicographic weights, scaled so the top level (safety) weighs 1."""
    from mo_rl.scalarize import lexicographic_weights as lex

    w = lex(make_env(cfg)[0].reward_spec, cfg.lex_resolution)
    return tuple(float(x) for x in w / w.max())


def method_config(cfg: DrivingStudyConfig, method: str) -> IQNConfig:
    variant, view = METHOD_KIND[method]
    weights = lexicographic_weights(cfg) if view == "lexicographic" else tuple(cfg.weights)
    return dataclasses.replace(cfg.agent, variant=variant, scalarization="weighted_sum",
                               scalarization_weights=weights)


def sensitivity_config(cfg: DrivingStudyConfig, rho: float, eps_scale: float,
                       tie_break: str) -> IQNConfig:
    base = method_config(cfg, "pr_iqn")
    eps = tuple(float(e) * eps_scale for e in base.dominance_eps)
    return dataclasses.replace(base, rho=(float(rho),) * len(base.rho), dominance_eps=eps,
                               tie_break=tie_break)


def sensitivity_label(rho: float, eps_scale: float, tie_break: str) -> str:
    return f"rho{rho:g}_eps{eps_scale:g}x_{tie_break}"


def weights_label(w: tuple[float, ...]) -> str:
    return "w" + "_".join(f"{x:g}" for x in w)


def choose_weights(sweep: dict[tuple[float, ...], pd.DataFrame]) -> tuple[float, ...]:
    """Best mean driving score over the selection seeds; ties go to fewer collisions."""
    return max(sweep, key=lambda w: (round(float(sweep[w]["driving_score"].mean()), 6),
                                     -float(sweep[w]["collision"].mean())))


def per_seed_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows (method, metric) with mean, 95% bootstrap CI, IQM and n over seeds."""
    rows = []
    for method, ev in results.items():
        for m in TABLE_METRICS:
            s = stats.summarize(ev[m].to_numpy(np.float64))
            rows.append({"method": method, "metric": m, **s})
    return pd.DataFrame(rows)


def fmt(v: float, pct: bool) -> str:
    if not np.isfinite(v):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def paper_table(table: pd.DataFrame, seeds: int, title: str) -> str:
    """Methods as rows, metrics as columns: 'mean [95% CI]' (rates in %)."""
    head = ["method", "success rate (%)", "collision rate (%)", "off-road rate (%)",
            "route completion (%)", "driving score"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in table["method"].unique():
        cells = [method]
        for m in TABLE_METRICS:
            r = table[(table.method == method) & (table.metric == m)].iloc[0]
            pct = m in ("success", "collision", "off_road")
            cells.append(f"{fmt(r['mean'], pct)} [{fmt(r['ci_low'], pct)}, "
                         f"{fmt(r['ci_high'], pct)}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean over {seeds} seeds of each seed's held-out evaluation episodes; "
              "[95% bootstrap CI of the mean over seeds] (mo_rl.stats). Rates = fraction of "
              "evaluation episodes with >= 1 such event; route completion and driving score "
              "(route completion x infraction penalty) as in the CARLA leaderboard."]
    return "\n".join(lines) + "\n"


def significance(results: dict[str, pd.DataFrame], reference: str = "pr_iqn") -> str:
    lines = ["### Pr-IQN vs baselines (two-sided tests over seeds)", "",
             "| baseline | metric | mean diff (Pr-IQN - baseline) | Welch p | Mann-Whitney p "
             "| significant (both p < 0.05) | better |",
             "|---|---|---|---|---|---|---|"]
    if reference not in results:
        return "\n".join(lines + ["", f"({reference} not run)"]) + "\n"
    for base, ev in results.items():
        if base == reference:
            continue
        for m in TABLE_METRICS:
            c = stats.compare(results[reference][m].to_numpy(np.float64), ev[m].to_numpy(
                np.float64))
            better = "-"
            if c["significant"]:
                lower = m in LOWER_IS_BETTER
                better = reference if (c["mean_diff"] < 0) == lower else base
            lines.append(f"| {base} | {m} | {c['mean_diff']:.4g} | {c['welch_p']:.3g} | "
                         f"{c['mann_whitney_p']:.3g} | {c['significant']} | {better} |")
    lines += ["", "With few seeds the tests have little power: 'not significant' is not "
              "'no difference'."]
    return "\n".join(lines) + "\n"


def plot_curves(train: dict[str, pd.DataFrame], objectives: tuple[str, ...], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [f"episode_return/{o}" for o in objectives] + ["train/collision", "train/success"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, col in zip(axes.ravel(), panels, strict=False):
        for method, df in train.items():
            if col not in df.columns:
                continue
            wide = df.pivot_table(index="env_steps", columns="seed", values=col, dropna=False)
            if wide.empty or not np.isfinite(wide.to_numpy(np.float64)).any():
                continue  # no finished training episode in this run
            # smooth over a window of updates (NaN when no episode ended in an update)
            sm = wide.rolling(max(1, len(wide) // 25), min_periods=1).mean()
            mean = sm.mean(axis=1)
            lo, hi = sm.quantile(0.1, axis=1), sm.quantile(0.9, axis=1)
            ax.plot(mean.index, mean.values, label=method)
            ax.fill_between(mean.index, lo.values, hi.values, alpha=0.2)
        ax.set_title(col)
        ax.set_xlabel("env steps per seed")
    axes.ravel()[0].legend()
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(cfg: DrivingStudyConfig, argv: list[str]) -> None:
    out = Path(cfg.results_root) / STUDY / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    env, params = make_env(cfg)
    check_eval_horizon(cfg, params)
    objectives = env.reward_spec.names
    print(f"driving: {env.name}, {env.action_space(params).n} meta-actions, reward "
          f"{env.reward_spec.describe()}; {cfg.seeds} seeds x {cfg.agent.total_timesteps} steps")
    timings, kinds = {}, []
    # each run's variant, weights and dominance settings are in its agent config
    identity = {"env": env_identity(env, params), "study": study_identity(
        cfg, drop=("methods", "weights", "weight_grid", "selection_seeds", "sensitivity"))}

    def train(name: str, acfg: IQNConfig, seeds: range) -> tuple[pd.DataFrame, pd.DataFrame]:
        t0 = time.perf_counter()
        res = run(lambda c: make_agent(c, env, params), acfg, seeds=seeds,
                  study=STUDY, run_name=f"{cfg.name}/{name}", num_chunks=cfg.num_chunks,
                  resume=cfg.resume, overwrite=not cfg.resume, objectives=objectives,
                  runs_root=cfg.runs_root, results_root=cfg.results_root,
                  table_metrics=list(TABLE_METRICS), title=f"{STUDY} / {cfg.name} / {name}",
                  identity=identity)
        kinds.append(res.info["kind"])
        timings[name] = time.perf_counter() - t0
        df = res.metrics
        ev = df[df.phase == "eval"].reset_index(drop=True)
        print(f"[{name}] {timings[name]:.0f} s; eval means: " + ", ".join(
            f"{m}={ev[m].mean():.3f}" for m in TABLE_METRICS), flush=True)
        return ev, df[df.phase == "train"].copy()

    if cfg.weight_grid:  # choose the weighted sum on seeds the table never sees
        sel = range(cfg.selection_seed_offset, cfg.selection_seed_offset + cfg.selection_seeds)
        sweep = {tuple(w): train(f"weights/{weights_label(tuple(w))}", dataclasses.replace(
            method_config(cfg, "iqn"), scalarization_weights=tuple(float(x) for x in w)),
            sel)[0] for w in cfg.weight_grid}
        chosen = choose_weights(sweep)
        (out / "weight_sweep.json").write_text(json.dumps(
            {"chosen": chosen, "selection_seeds": list(sel)}, indent=2) + "\n")
        cfg = dataclasses.replace(cfg, weights=chosen)
        print(f"weight sweep chose {chosen}", flush=True)
    evals, trains = {}, {}
    for method in cfg.methods:
        evals[method], trains[method] = train(method, method_config(cfg, method),
                                              range(cfg.seeds))
    for rho, eps_scale, tb in cfg.sensitivity:
        label = sensitivity_label(rho, eps_scale, tb)
        train(f"sensitivity/{label}", sensitivity_config(cfg, rho, eps_scale, tb),
              range(cfg.seeds))

    save_config(cfg, out / "study.json")
    texts = tables(cfg, evals, out)
    for name, text in texts.items():
        (out / name).write_text(text)
    md, sig = texts["table.md"], texts["significance.md"]
    plot_curves(trains, objectives, out / "curves.png")
    write_study_provenance(out, study=STUDY, kinds=kinds)
    (out / "timings.json").write_text(json.dumps(
        {"seconds_per_method": timings, "device": str(jax.devices()[0])}, indent=2) + "\n")
    print(md)
    print(sig)
    print(f"wrote {out}")


def _eval_rows(folder: Path) -> pd.DataFrame:
    df = pd.read_csv(folder / "metrics.csv", low_memory=False)
    return df[df.phase == "eval"].reset_index(drop=True)


def baselines_note(cfg: DrivingStudyConfig) -> str:
    lex = ", ".join(f"{w:.3g}" for w in lexicographic_weights(cfg))
    how = ("chosen by the weight sweep (weight_sweep.md)" if cfg.weight_grid
           else f"from {cfg.weights_from}" if cfg.weights_from else "as configured (no sweep)")
    return (f"Baselines: iqn / ensemble learn the weighted sum with weights "
            f"{tuple(cfg.weights)} (safety, rules, progress, comfort), {how}; iqn_lex / "
            f"ensemble_lex the lexicographic scalarisation (weights {lex}, resolution "
            f"{cfg.lex_resolution}).")


def tables(cfg: DrivingStudyConfig, evals: dict[str, pd.DataFrame],
           out: Path | None = None) -> dict[str, str]:
    """table.csv, table.md and significance.md from each method's evaluation rows, plus
    weight_sweep.md and sensitivity.md from their run folders under `out` when the study
    has them."""
    table = per_seed_table(evals)
    users = ", walkers, parked cars and stop signs" if cfg.road_users else ""
    md = paper_table(table, cfg.seeds, f"Driving ({cfg.env_preset} map{users}, discrete "
                     "meta-actions): "
                     f"Pr-IQN vs IQN vs ensemble-IQN, {cfg.agent.total_timesteps} env steps "
                     "per seed")
    if cfg.weight_grid or any(m.endswith("_lex") for m in cfg.methods):
        md += "\n" + baselines_note(cfg) + "\n"  # (folders before issue 13's baselines: none)
    texts = {"table.csv": table.to_csv(index=False), "table.md": md,
             "significance.md": significance(evals)}
    if out is not None and cfg.weight_grid:
        sweep = {weights_label(tuple(w)): _eval_rows(out / "weights" / weights_label(tuple(w)))
                 for w in cfg.weight_grid}
        texts["weight_sweep.md"] = paper_table(
            per_seed_table(sweep), cfg.selection_seeds,
            f"Weight sweep for the weighted-sum baselines: IQN on selection seeds "
            f"{cfg.selection_seed_offset}..{cfg.selection_seed_offset + cfg.selection_seeds - 1}"
            f" (not in the main table); chosen: {weights_label(tuple(cfg.weights))}")
    if out is not None and cfg.sensitivity:
        sens = {sensitivity_label(*t): _eval_rows(out / "sensitivity" / sensitivity_label(*t))
                for t in cfg.sensitivity}
        texts["sensitivity.md"] = paper_table(
            per_seed_table({"pr_iqn (study setting)": evals["pr_iqn"], **sens})
            if "pr_iqn" in evals else per_seed_table(sens), cfg.seeds,
            f"Pr-IQN sensitivity to rho, eps (scale on {cfg.agent.dominance_eps}) and the "
            f"tie-break; study setting rho {cfg.agent.rho}, tie-break {cfg.agent.tie_break}")
    return texts


def rebuild_tables(out: str | Path) -> dict[str, str]:
    """The study tables of a results folder, from study.json and <method>/metrics.csv."""
    out = Path(out)
    cfg = load_config(DrivingStudyConfig, out / "study.json")
    return tables(cfg, {m: _eval_rows(out / m) for m in cfg.methods}, out)


def carla_main(cfg: DrivingStudyConfig, opts, argv: list[str]) -> None:
    """`--env carla` (experiments.carla): the study on CARLA servers, or `--eval-only`: each
    method's trained checkpoint (simulator) scored on CARLA."""
    from experiments import carla

    def carla_env(cfg: DrivingStudyConfig, seed: int = 0):
        return opts.env(cfg.seeds * cfg.agent.num_envs, reward="vector",
                        action_type="discrete", obs_type="vector", max_vehicles=cfg.max_vehicles)

    if not opts.eval_only:
        global make_env
        make_env = carla_env
        return main(cfg, argv)
    sim_env, sim_params = make_env(cfg)
    env, params = carla_env(cfg)
    horizon = max(cfg.agent.eval_max_steps, int(params.max_steps))
    runs = {m: (lambda m=m: make_agent(method_config(cfg, m), sim_env, sim_params),
                lambda m=m: make_agent(dataclasses.replace(method_config(cfg, m),
                                                           eval_max_steps=horizon), env, params))
            for m in cfg.methods}
    carla.eval_only(STUDY, cfg.name, opts, cfg.seeds, runs, TABLE_METRICS)


if __name__ == "__main__":
    from experiments.carla import study_main

    study_main(DrivingStudyConfig, PRESETS, main, carla_main, __doc__, sys.argv[1:])
