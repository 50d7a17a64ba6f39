"""Scaling of the driving step with the number of background vehicles (issue 19).

Times jit(scan(vmap(AutoReset(env).step))) with random actions (vector obs) at
one batch size for several vehicle counts, side by side in one run:
* "sorted": envs/driving/neighbours.py as shipped (all-pairs masks up to
  ALL_PAIRS_MAX vehicles, sorted look-ups above);
* "all-pairs": the N x N masks at every size (the search before issue 19).
Compile time is reported apart. Per-vehicle cost = (time per step / vehicles)
relative to the first count: <= 1 means the step grows at most linearly.

    python scripts/bench_traffic.py --batch 1024 --vehicles 8 16 32 64 128 256
"""

from __future__ import annotations

import argparse

import jax

import mo_rl  # noqa: F401  (XLA flags before JAX starts)
from envs.driving import make_driving
from envs.driving import neighbours as nb
from mo_rl.bench import env_steps_per_s
from mo_rl.results import bench_header
from mo_rl.wrappers import AutoReset


def steps_per_s(batch: int, vehicles: int, preset: str, seconds: float) -> tuple[float, float]:
    """(env steps/s, compile s) of the scanned, vmapped step with random actions."""
    env, params = make_driving(preset, max_vehicles=vehicles, num_vehicles=vehicles)
    env = AutoReset(env)
    space = env.action_space(params)
    r = env_steps_per_s(env, params, batch, 50,
                        lambda k, n: jax.vmap(space.sample)(jax.random.split(k, n)),
                        seconds=seconds)
    return r["steps_per_s"], r["compile_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--vehicles", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    args = ap.parse_args()
    print("\n".join(bench_header()))
    print(f"preset {args.preset}, batch {args.batch}, vector obs")
    print(f"{'vehicles':>8} {'sorted steps/s':>15} {'all-pairs':>12} {'ratio':>6} "
          f"{'cost/veh sorted':>16} {'all-pairs':>10} {'compile s':>10}")
    base = {}
    shipped = nb.ALL_PAIRS_MAX
    for n in args.vehicles:
        row = {}
        for name, limit in (("sorted", shipped), ("all-pairs", 1 << 30)):
            nb.ALL_PAIRS_MAX = limit  # read when the step is traced
            row[name] = steps_per_s(args.batch, n, args.preset, args.seconds)
            base.setdefault(name, (n, row[name][0]))
        nb.ALL_PAIRS_MAX = shipped
        cost = {k: base[k][1] / row[k][0] / (n / base[k][0]) for k in row}
        print(f"{n:>8} {row['sorted'][0]:>15,.0f} {row['all-pairs'][0]:>12,.0f} "
              f"{row['sorted'][0] / row['all-pairs'][0]:>6.2f} {cost['sorted']:>16.2f} "
              f"{cost['all-pairs']:>10.2f} {row['sorted'][1]:>5.1f}/{row['all-pairs'][1]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
