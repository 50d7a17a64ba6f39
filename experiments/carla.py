"""`--env carla` for the driving studies: train on CARLA servers, or score policies trained
in the JAX simulator on CARLA (the sim-to-CARLA check).

    python -m experiments.driving_pr_iqn --preset quick --env carla --carla-port 2000 \
        --seeds 1 --agent.num-envs 1 --agent.eval-max-steps 12000
    python -m experiments.driving_pr_iqn --preset quick --env carla --eval-only \
        --checkpoint runs/driving_pr_iqn/quick --carla-port 2000

Flags (taken out of the command line before the study's own): --env {jax,carla},
--carla-host, --carla-port (a port, or a comma list "2000,2003": one server per env;
with one port, seeds x num_envs servers are expected PORT_STEP = 3 apart),
--carla-town, --carla-routes, --carla-vehicles / --carla-walkers (background traffic
spawned per episode), --carla-timeout (s), --eval-only, --checkpoint (the study's
run folder under runs/, or one run's folder), --carla-out (where the eval-only table
goes; default runs/carla_eval/<study>/<name>). Training on CARLA uses the study's
own code with the CARLA env in place of the simulator; --eval-only restores each
run's latest checkpoint into the simulator's agent and runs its held-out episodes
(the study's eval_episodes) on CARLA, one seed after another, on the first server.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from mo_rl import stats


@dataclass(frozen=True)
class CarlaOptions:
    host: str = "localhost"
    port: str = "2000"
    town: str = "Town01"
    routes: str = "routes_town01.xml"
    vehicles: int = 30
    walkers: int = 0
    timeout: float = 20.0
    eval_only: bool = False
    checkpoint: str = ""
    out: str = ""

    def env(self, num_servers: int, **kw: Any):
        """A CarlaIn env over the servers and its params."""
        from envs.carla.protocol import CarlaIn, endpoints

        env = CarlaIn(endpoints(self.host, self.port, num_servers), town=self.town,
                      routes=self.routes, num_vehicles=self.vehicles,
                      num_walkers=self.walkers, timeout=self.timeout, **kw)
        return env, env.default_params


def study_main(config_cls: type, presets: dict, main: Callable, carla_main: Callable,
               description: str, argv: Sequence[str]) -> None:
    """A driving study's command line: its own flags (mo_rl.config.cli) plus `--env carla`
    and the CARLA flags; runs `main(cfg, args)` or `carla_main(cfg, opts, args)`."""
    from mo_rl.config import cli

    opts, args = carla_args(argv)
    cfg = cli(config_cls, presets, default_preset="quick", args=args, description=description)
    if opts is None:
        main(cfg, args)
    else:
        carla_main(cfg, opts, args)


def carla_args(argv: Sequence[str]) -> tuple[CarlaOptions | None, list[str]]:
    """(options, the rest of argv) when `--env carla` is given, else (None, argv); the
    CARLA flags without `--env carla` are an error."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # the study's flags pass
    ap.add_argument("--env", choices=("jax", "carla"), default="jax")
    d = CarlaOptions()
    for name in ("host", "port", "town", "routes", "out"):
        ap.add_argument(f"--carla-{name}", default=getattr(d, name))
    ap.add_argument("--carla-vehicles", type=int, default=d.vehicles)
    ap.add_argument("--carla-walkers", type=int, default=d.walkers)
    ap.add_argument("--carla-timeout", type=float, default=d.timeout)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--checkpoint", default="")
    known, rest = ap.parse_known_args(list(argv))
    given = [a for a in argv if a.split("=")[0] in (
        "--eval-only", "--checkpoint") or a.startswith("--carla-")]
    if known.env != "carla":
        if given:
            raise SystemExit(f"{' '.join(given)} need --env carla")
        return None, list(argv)
    if known.eval_only and not known.checkpoint:
        raise SystemExit("--eval-only needs --checkpoint <runs/<study>/<name> folder>")
    opts = CarlaOptions(known.carla_host, str(known.carla_port), known.carla_town,
                        known.carla_routes, known.carla_vehicles, known.carla_walkers,
                        known.carla_timeout, known.eval_only, known.checkpoint, known.carla_out)
    return opts, rest


def ckpt_dir(folder: str | Path, run: str) -> Path:
    """The checkpoint folder of run `run` below a study run folder (or the folder itself)."""
    folder = Path(folder)
    for cand in (folder / run / "ckpt", folder / "ckpt", folder):
        if cand.is_dir() and any(p.name.startswith("chunk_") for p in cand.iterdir()):
            return cand
    raise FileNotFoundError(f"no checkpoint of run {run!r} under {folder} (expected "
                            f"{folder / run / 'ckpt'}/chunk_*); train it first in the "
                            "simulator (the same preset and overrides)")


def restore_latest(agent, directory: Path, seeds: int) -> Any:
    """The latest checkpoint of a run (all seeds) restored into `agent`'s state layout."""
    from mo_rl import sweep
    from mo_rl.batching import map_runs
    from mo_rl.checkpoint import Checkpointer

    ck = Checkpointer(directory, "")
    latest = ck.latest()
    ck.config_hash = ck.read_meta(latest)["config_hash"]  # weights only: the layout is checked
    like = jax.jit(map_runs(agent.init))(sweep.seed_keys(list(range(seeds))))
    state, _ = ck.restore(latest, like)
    return state


def eval_only(study: str, name: str, opts: CarlaOptions, seeds: int,
              runs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]],
              metrics: Sequence[str]) -> pd.DataFrame:
    """Score each run's trained policy on CARLA. runs: label -> (sim agent factory, CARLA
    evaluation agent factory); both agents share the config, so the restored state fits
    the evaluation agent's `evaluate`. Writes table.md / metrics.csv to opts.out."""
    out = Path(opts.out or Path("runs") / "carla_eval" / study / name)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, (make_sim, make_eval) in runs.items():
        state = restore_latest(make_sim(), ckpt_dir(opts.checkpoint, label), seeds)
        evaluate = jax.jit(make_eval().evaluate)
        for s in range(seeds):
            ev = jax.device_get(evaluate(jax.tree.map(lambda x, s=s: x[s], state),
                                         jax.random.key(10_000 + s)))
            row = {"run": label, "seed": s, "episodes_finished": float(np.sum(ev["finished"]))}
            row.update({m: float(np.asarray(ev[m])) for m in (*metrics, "server_lost")
                        if m in ev})
            rows.append(row)
            print(f"[carla eval] {label} seed {s}: " + ", ".join(
                f"{k}={v:.3g}" for k, v in row.items() if k not in ("run", "seed")), flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "metrics.csv", index=False)
    lines = [f"### {study} / {name}: policies trained in the JAX simulator, scored on CARLA "
             f"({opts.town}, {opts.routes})", "",
             "| run | " + " | ".join(metrics) + " | server lost |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for label, g in df.groupby("run", sort=False):
        cells = []
        for m in (*metrics, "server_lost"):
            s = stats.summarize(g[m].to_numpy(np.float64)) if m in g else None
            cells.append("-" if s is None or not np.isfinite(s["mean"]) else
                         f"{s['mean']:.3g} [{s['ci_low']:.3g}, {s['ci_high']:.3g}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean over {seeds} seeds of each seed's held-out CARLA episodes (finished "
              "ones); [95% bootstrap CI]. 'server lost' = share of episodes cut by a lost "
              "server (their partial metrics are included in the means)."]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "carla.json").write_text(json.dumps(opts.__dict__, indent=2) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return df
