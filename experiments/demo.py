"""Demo study: PPO on a preordered two-objective task, weighted sum vs lexicographic.

    python -m experiments.demo --preset quick            # ~30 s on 2 CPU cores (8 seeds)
    python -m experiments.demo --preset quick --seeds 16 --agent.lr 1e-3
    python -m experiments.demo --preset quick --resume   # continue an interrupted run

Env: envs.toy.PreorderedShortcut, reward (safety, progress) with
"safety > progress". Walking to the goal is safe and earns progress 4; the
shortcut earns progress 9 but crashes (safety -10) with probability 0.25.
Known answers (envs/toy.py): the unit-weight weighted sum prefers the
shortcut (mean return (-2.5, 9)), the lexicographic view walks (0, 4).
The same PPO config is trained once per scalarisation over all seeds
(vmapped, sharded over devices, chunked and checkpointed by mo_rl.runner).

Writes results/demo/<name>/:
  table.md / table.csv  greedy-policy evaluation per scalarisation: mean,
                        95% bootstrap CI over seeds, IQM, n seeds
  significance.md       weighted sum vs lexicographic per metric (Welch t, Mann-Whitney U)
  curves.png            training return per objective with 95% CI bands
  metrics.csv, config.json, run.json (device, timings, table spec),
  provenance.json + command.txt (every command that produced the folder, each
  with its code version), and one runner results dir per scalarisation
  (<name>/<scalarization>/). `rebuild_tables(folder)` recomputes the tables
  from the stored files (scripts/make_tables.py --check).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.ppo import PPOConfig, make_agent
from mo_rl import stats
from mo_rl.config import check, check_positive, cli, load_config, save_config
from mo_rl.results import (
    device_info,
    plot_curves,
    table_from_metrics,
    table_texts,
    write_study_provenance,
)
from mo_rl.runner import env_identity, run, study_identity
from mo_rl.sweep import init_distributed, is_main_process

STUDY = "demo"
SCALARIZATIONS = ("weighted_sum", "lexicographic")
TABLE_METRICS = ("episode_return/safety", "episode_return/progress", "episode_length")


@dataclass(frozen=True)
class DemoConfig:
    """PPO on PreorderedShortcut, one run per scalarisation, same seeds."""

    agent: PPOConfig
    name: str = "quick"  # results/demo/<name>/
    seeds: int = 8
    scalarizations: tuple[str, ...] = SCALARIZATIONS
    length: int = 6  # corridor length of PreorderedShortcut
    num_chunks: int = 5
    checkpoint_every: int = 1
    resume: bool = False
    progress: bool = True
    runs_root: str = "runs"
    results_root: str = "results"

    def __post_init__(self) -> None:
        check_positive(self, "seeds", "num_chunks", "checkpoint_every", "length")
        for s in self.scalarizations:
            check(self, "scalarizations", s in SCALARIZATIONS,
                  f"entries must be in {SCALARIZATIONS}")
        check(self, "num_chunks", self.agent.num_updates % self.num_chunks == 0,
              f"must divide the agent's num_updates={self.agent.num_updates}")


_PPO = dict(num_envs=8, num_steps=32, minibatch_size=64, update_epochs=4, lr=1e-3,
            anneal_lr=True, gamma=0.99, ent_coef=0.01, hidden=(32, 32), eval_episodes=32,
            eval_max_steps=50)

PRESETS: dict[str, DemoConfig] = {
    "quick": DemoConfig(agent=PPOConfig(total_timesteps=256 * 60, **_PPO), name="quick"),
    "tiny": DemoConfig(agent=PPOConfig(total_timesteps=256 * 4, **_PPO), name="tiny", seeds=2,
                       num_chunks=2, results_root="runs/results_tiny"),
    "full": DemoConfig(agent=PPOConfig(total_timesteps=256 * 400, **_PPO), name="full",
                       seeds=32, num_chunks=10),
}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    init_distributed()  # no-op unless the multi-host env vars are set
    cfg = cli(DemoConfig, PRESETS, args=argv, default_preset="quick", description=__doc__)
    from envs.toy import PreorderedShortcut

    env = PreorderedShortcut(cfg.length)
    out = Path(cfg.results_root) / STUDY / cfg.name
    frames, kinds = [], []
    identity = {"env": env_identity(env, env.default_params),
                "study": study_identity(cfg, drop=("scalarizations",))}
    t0 = time.time()
    for scal in cfg.scalarizations:
        agent_cfg = dataclasses.replace(cfg.agent, scalarization=scal)
        r = run(lambda c: make_agent(c, env), agent_cfg, range(cfg.seeds), study=STUDY,
                run_name=f"{cfg.name}/{scal}", num_chunks=cfg.num_chunks,
                checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                overwrite=not cfg.resume,
                objectives=env.reward_spec.names, runs_root=cfg.runs_root,
                results_root=cfg.results_root, progress=cfg.progress,
                table_metrics=TABLE_METRICS, title=f"PPO, {scal} view", identity=identity)
        if r.metrics is not None:
            frames.append(r.metrics.assign(scalarization=scal))
            kinds.append(r.info["kind"])
    if not is_main_process():
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    cols = ["scalarization"] + [c for c in df.columns if c != "scalarization"]
    df = df[cols]
    df.to_csv(out / "metrics.csv", index=False)
    save_config(cfg, out / "config.json")
    title = f"demo/{cfg.name}: PPO on PreorderedShortcut (safety > progress), greedy evaluation"
    plot_curves(df, out / "curves.png", group_by=["scalarization"], smooth=3,
                title=f"demo/{cfg.name}: PPO training return per objective (sampling policy), "
                f"mean and 95% CI over {cfg.seeds} seeds")
    info = {"study": STUDY, "run": cfg.name, "wall_s": round(time.time() - t0, 1),
            "device": device_info(), "seeds": cfg.seeds,
            "table": {"metrics": list(TABLE_METRICS), "group_by": ["scalarization"],
                      "title": title}}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    write_study_provenance(out, study=STUDY, kinds=kinds)
    texts = rebuild_tables(out)
    for name, text in texts.items():
        (out / name).write_text(text)
    print()
    print(texts["table.md"])
    print(texts["significance.md"])
    print(f"written to {out}/ (table.md, curves.png, metrics.csv); {info['wall_s']} s")
    return table_from_metrics(df, TABLE_METRICS, ["scalarization"])


def rebuild_tables(out: str | Path) -> dict[str, str]:
    """table.csv, table.md and significance.md of a demo results folder, from its
    metrics.csv, config.json and run.json (the table spec)."""
    out = Path(out)
    spec = json.loads((out / "run.json").read_text())["table"]
    cfg = load_config(DemoConfig, out / "config.json")
    df = pd.read_csv(out / "metrics.csv")
    table = table_from_metrics(df, spec["metrics"], spec["group_by"])
    return {**table_texts(table, spec["group_by"], spec["title"]),
            "significance.md": significance(df, cfg.scalarizations)}


def significance(df: pd.DataFrame, scals: tuple[str, ...]) -> str:
    if len(scals) < 2:
        return ""
    ev = df[df.phase == "eval"]
    a, b = scals[0], scals[1]
    lines = [f"### {a} vs {b} (per-seed greedy evaluation)", "",
             "| metric | mean diff | Welch p | Mann-Whitney p | significant (both < 0.05) |",
             "|---|---|---|---|---|"]
    for m in TABLE_METRICS:
        c = stats.compare(ev[ev.scalarization == a][m], ev[ev.scalarization == b][m])
        lines.append(f"| {m} | {c['mean_diff']:.4g} | {c['welch_p']:.3g} | "
                     f"{c['mann_whitney_p']:.3g} | {c['significant']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
