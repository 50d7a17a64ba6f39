"""Reward-mode ablation on the coopetition games: IPPO under private, integrated and
cooperative rewards (+ a private<->cooperative mixing sweep on two games).

    python -m experiments.coopetition_ablation --preset quick    # ~10 min on 2 CPU cores
    python -m experiments.coopetition_ablation --preset quick --seeds 8 --agent.lr 1e-3

Every game is one mo_rl.runner run whose grid is the reward mode (CoopParams
.reward_weights: one vmapped program over mode x seed, chunked, checkpointed under runs/).
After training, greedy (Beta-mean) evaluation episodes give per run: the mean cooperation
level (action / endowment over the episode), the welfare (sum of private payoffs per step)
and the final trust (mean off-diagonal T at the episode's end). The tables hold mean and
95% bootstrap CI over seeds; heatmaps show game x mode. Benchmarks: full cooperation
(rate 1) everywhere, and in team production with the TR-3 report's payoff
("TeamProduction-team": trust off, pi = Q/n - c a) the Nash effort rate
(omega beta / (c n^(2-beta)))^(1/(1-beta)) / e = 0.685 (private) vs the welfare optimum 1.0.

Writes results/coopetition/<name>/: table.md, table.csv (every game x mode), mixing.md /
mixing.csv (the sweep), heatmap_cooperation.png, heatmap_welfare.png,
heatmap_final_trust.png, runs.csv / mixing_runs.csv (every run), config.json, run.json
(device, wall time, command).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.marl import MARLConfig, make_agent
from envs.coopetition import GAMES, make_game, weights_for
from envs.coopetition import mechanics as M
from mo_rl import stats
from mo_rl.config import check, check_positive, cli, save_config
from mo_rl.results import device_info
from mo_rl.runner import run

STUDY = "coopetition"
MODES = ("private", "integrated", "cooperative")
METRICS = ("cooperation", "welfare", "final_trust")
# extra cases beside the registered games: the TR-3 report's team production payoff
EXTRA = {"TeamProduction-team": ("TeamProduction-v0", {"team_payoff": 1.0,
                                                       "trust_enabled": False})}


@dataclass(frozen=True)
class AblationConfig:
    agent: MARLConfig
    name: str = "quick"
    seeds: int = 5
    games: tuple[str, ...] = (*GAMES, *EXTRA)
    mix_games: tuple[str, ...] = ("TrustDilemma-v0", "PublicGoods-v0")
    mix_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    apache_phase: str = "emergence"  # 8 agents; "maturity" (40 agents) costs ~25x more
    num_chunks: int = 2
    resume: bool = False
    progress: bool = True
    runs_root: str = "runs"
    results_root: str = "results"

    def __post_init__(self) -> None:
        check_positive(self, "seeds", "num_chunks")
        for g in (*self.games, *self.mix_games):
            check(self, "games", g in GAMES or g in EXTRA, f"unknown game {g!r}")
        check(self, "num_chunks", self.agent.num_updates % self.num_chunks == 0,
              f"must divide the agent's num_updates={self.agent.num_updates}")


_AGENT = dict(num_envs=16, num_steps=50, minibatch_size=400, gamma=0.5, lr=1e-3,
              ent_coef=0.0, reward_scale=0.05, hidden=(64, 64), eval_episodes=4)
PRESETS = {
    "quick": AblationConfig(agent=MARLConfig(total_timesteps=16 * 50 * 40, **_AGENT)),
    "tiny": AblationConfig(agent=MARLConfig(total_timesteps=16 * 50 * 2, **_AGENT),
                           name="tiny", seeds=2, games=("TrustDilemma-v0", "SLCD-v0"),
                           mix_games=("TrustDilemma-v0",), mix_weights=(0.0, 1.0),
                           num_chunks=1, results_root="runs/results_tiny"),
    "full": AblationConfig(agent=MARLConfig(total_timesteps=16 * 50 * 400, **_AGENT),
                           name="full", seeds=7, num_chunks=4, apache_phase="maturity"),
}


def build(game: str, phase: str):
    env_id, kw = EXTRA.get(game, (game, {}))
    if env_id == "ApacheProject-v0":
        kw = {**kw, "phase": phase}
    return make_game(env_id, **kw)


def train_game(cfg: AblationConfig, game: str, weights: np.ndarray, tag: str) -> pd.DataFrame:
    """One runner run: grid = reward weights, all seeds; the eval metrics per run."""
    env, params = build(game, cfg.apache_phase)
    r = run(lambda c: make_agent(c, env, params), cfg.agent, range(cfg.seeds), study=STUDY,
            run_name=f"{cfg.name}/{tag}/{game}", num_chunks=cfg.num_chunks,
            resume=cfg.resume, overwrite=not cfg.resume, grid={"reward_weights": weights},
            runs_root=cfg.runs_root, results_root=None, progress=cfg.progress,
            objectives=env.reward_spec.names, title=f"{game} {tag}")
    if r.eval is None:
        raise RuntimeError(f"{game}: the run did not finish")
    g = weights.shape[0]
    rows = []
    for i in range(g * cfg.seeds):
        rows.append({"game": game, "grid": i // cfg.seeds, "seed": i % cfg.seeds,
                     **{m: float(np.nanmean(r.eval[m][i])) for m in METRICS}})
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    rows = []
    for key, grp in df.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        for m in METRICS:
            s = stats.summarize(grp[m].to_numpy())
            row.update({m: s["mean"], f"{m}_lo": s["ci_low"], f"{m}_hi": s["ci_high"]})
        row["n"] = len(grp)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame, by: list[str], title: str) -> str:
    head = "| " + " | ".join(by + list(METRICS) + ["n"]) + " |"
    lines = [f"## {title}", "", head, "|" + "---|" * (len(by) + len(METRICS) + 1)]
    for _, r in summary.iterrows():
        cells = [str(r[b]) for b in by]
        cells += [f"{r[m]:.3f} [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]" for m in METRICS]
        lines.append("| " + " | ".join(cells + [str(r['n'])]) + " |")
    return "\n".join(lines) + "\n"


def heatmap(summary: pd.DataFrame, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    piv = summary.pivot(index="game", columns="mode", values=metric)[list(MODES)]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(piv) + 1.5))
    im = ax.imshow(piv.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(MODES)), MODES)
    ax.set_yticks(range(len(piv)), piv.index)
    for (i, j), v in np.ndenumerate(piv.to_numpy()):
        ax.text(j, i, f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}", ha="center", va="center",
                color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"{metric} (greedy IPPO, mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    cfg = cli(AblationConfig, PRESETS, args=argv, default_preset="quick", description=__doc__)
    out = Path(cfg.results_root) / STUDY / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    modes = np.stack([np.asarray(weights_for(m)) for m in MODES])
    frames = []
    for i, game in enumerate(cfg.games):
        print(f"[{i + 1}/{len(cfg.games)}] {game}: 3 modes x {cfg.seeds} seeds", flush=True)
        df = train_game(cfg, game, modes, "modes")
        frames.append(df.assign(mode=[MODES[g] for g in df["grid"]]))
    runs = pd.concat(frames, ignore_index=True)
    summary = summarise(runs, ["game", "mode"])
    mix = np.stack([np.asarray(weights_for(float(m))) for m in cfg.mix_weights])
    mframes = []
    for game in cfg.mix_games:
        print(f"mixing sweep {game}: {len(cfg.mix_weights)} weights x {cfg.seeds} seeds",
              flush=True)
        df = train_game(cfg, game, mix, "mix")
        mframes.append(df.assign(mix=[cfg.mix_weights[g] for g in df["grid"]]))
    mruns = pd.concat(mframes, ignore_index=True)
    msummary = summarise(mruns, ["game", "mix"])

    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "table.csv", index=False)
    mruns.to_csv(out / "mixing_runs.csv", index=False)
    msummary.to_csv(out / "mixing.csv", index=False)
    nash = M.nash_effort(25.0, 0.7, 1.0, 4) / 50.0
    bench = (f"Benchmarks: full cooperation = 1.0; TeamProduction-team (TR-3 report payoff, "
             f"trust off): Nash effort rate {nash:.3f} under the private reward, welfare "
             f"optimum 1.0 (the endowment) under the cooperative one.\n")
    order = {m: i for i, m in enumerate(MODES)}
    dirs = []
    for game, grp in summary.groupby("game", sort=False):
        c = grp.set_index("mode")["cooperation"]
        dirs.append(f"| {game} | {c['private']:.3f} | {c['integrated']:.3f} | "
                    f"{c['cooperative']:.3f} | "
                    f"{'yes' if c['cooperative'] > c['private'] else 'no'} |")
    direction = ("## Direction: does cooperation rise from the private to the cooperative "
                 "reward?\n\n| game | private | integrated | cooperative | coop > private |\n"
                 "|---|---|---|---|---|\n" + "\n".join(dirs) + "\n")
    text = (f"# coopetition/{cfg.name}: IPPO (shared Beta policy), greedy evaluation, "
            f"mean [95% bootstrap CI] over {cfg.seeds} seeds, "
            f"{cfg.agent.total_timesteps:,} env steps per run\n\n{bench}\n"
            + markdown(summary.sort_values(["game", "mode"], key=lambda s: s.map(order)
                                           if s.name == "mode" else s),
                       ["game", "mode"], "Reward modes") + "\n" + direction + "\n"
            + markdown(msummary, ["game", "mix"], "Private (0) <-> cooperative (1) mixing"))
    (out / "table.md").write_text(text)
    for m in METRICS:
        heatmap(summary, m, out / f"heatmap_{m}.png")
    save_config(cfg, out / "config.json")
    info = {"study": STUDY, "run": cfg.name, "command": " ".join(["python -m",
            "experiments.coopetition_ablation", *(sys.argv[1:] if argv is None else argv)]),
            "wall_s": round(time.time() - t0, 1), "device": device_info()}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    print(text)
    print(f"written to {out}/ in {info['wall_s']} s")
    return summary


if __name__ == "__main__":
    main()
