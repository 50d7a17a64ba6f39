"""Benchmark the JAX driving env against highway-env at equal simulated time per step.

A step of ours is 0.1 s of driving; highway-v0's default step is 1 s (policy 1 Hz, 15
simulation substeps). So highway-env runs here with policy_frequency =
simulation_frequency = 10 (one step = one 0.1 s substep) and `--vehicles` vehicles, side
by side in the same process, and every ratio is ours / highway-env at equal dt.

Ours: steps/s of jit(scan(vmap(AutoReset(env).step))) with random continuous actions, at
several batch sizes, compile time apart, for
  1. the vector observation, road users off and on (ROAD_USERS: walkers, parked cars,
     stop signs) at their default density, plus background lane changes and cut-ins
     (LANE_CHANGES);
  2. the BEV observation (raster + measurements), road users off and on;
  3. the cost of each addition alone (vector obs, --additions-batch);
  4. the scaling curve over road users (--sweep: n vehicles; n/2 vehicles + n/2 walkers).
Each step's observation is read in full (a 32-bit max over the raster's bytes), so XLA
cannot drop it as dead code.

    python scripts/bench_driving.py                        # everything, defaults below
    python scripts/bench_driving.py --highway-seconds 0    # no highway-env (e.g. a GPU box)
    python scripts/bench_driving.py --vehicles-sweep 8 16 32 64   # only the vehicle curve
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import mo_rl  # noqa: F401  (XLA flags before JAX starts)
from envs.driving import ROAD_USERS, make_driving
from mo_rl.bench import env_steps_per_s
from mo_rl.results import bench_header
from mo_rl.wrappers import AutoReset

ROOT = Path(__file__).resolve().parents[1]
# background lane changes / cut-ins (DrivingParams lc_rate, cutin_rate: 0 by default and in
# ROAD_USERS); the bench switches them on at these rates (1/s per vehicle). Earlier versions
# looked for lane_change* fields that never existed: their files ran without lane changes.
LANE_CHANGES = {"lc_rate": 0.05, "cutin_rate": 0.02}
ALL_ON = {**ROAD_USERS, **LANE_CHANGES}


def _touch(obs) -> jax.Array:
    """A scalar that depends on every element of the observation, cheaply."""
    out = jnp.float32(0)
    for leaf in jax.tree.leaves(obs):
        if leaf.dtype == jnp.uint8 and leaf.shape[-1] % 4 == 0:
            words = leaf.reshape(*leaf.shape[:-1], leaf.shape[-1] // 4, 4)
            out += jax.lax.bitcast_convert_type(words, jnp.uint32).max().astype(jnp.float32)
        else:
            out += leaf.astype(jnp.float32).sum()
    return out


def bench_jax(batch: int, obs_type: str, vehicles: int, preset: str, steps_total: int,
              world: dict | None = None) -> dict:
    """steps/s of the auto-resetting env at one batch size (`world`: DrivingParams overrides,
    e.g. num_walkers)."""
    env, params = make_driving(preset, obs_type=obs_type, max_vehicles=vehicles,
                               num_vehicles=vehicles, **(world or {}))
    env = AutoReset(env)
    space = env.action_space(params)
    t_len = int(max(10, min(1000, steps_total // batch)))
    r = env_steps_per_s(env, params, batch, t_len,
                        lambda k, n: jax.vmap(space.sample)(jax.random.split(k, n)),
                        seconds=3.0, touch=_touch)
    return dict(batch=batch, obs=obs_type, **r)


def bench_highway(vehicles: int, seconds: float) -> float:
    """highway-v0 steps/s with one 0.1 s simulation substep per step (random actions)."""
    import gymnasium
    import highway_env  # noqa: F401  (registers highway-v0)

    env = gymnasium.make("highway-v0", config={"vehicles_count": vehicles,
                                               "policy_frequency": 10,
                                               "simulation_frequency": 10})
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        n += 1
        if term or trunc:
            env.reset()
    return n / (time.perf_counter() - t0)


def _ratio(steps: float, hw: float | None) -> str:
    return f"{steps / hw:>10,.0f}x" if hw else f"{'-':>11}"


def _row(label: str, r: dict, hw: float | None) -> None:
    print(f"{label:<22} {r['batch']:>6} {r['compile_s']:>9.1f} {r['steps_per_s']:>13,.0f} "
          f"{_ratio(r['steps_per_s'], hw)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 1024, 4096])
    ap.add_argument("--bev-batches", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--vehicles", type=int, default=16)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=400_000, help="env steps per timed call")
    ap.add_argument("--highway-seconds", type=float, default=15.0,
                    help="time highway-env for this long; 0 skips it (no ratio column)")
    ap.add_argument("--additions-batch", type=int, default=1024,
                    help="batch of the cost-of-each-addition table (0 skips it)")
    ap.add_argument("--sweep", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256],
                    help="road-user counts of the scaling curve (empty skips it)")
    ap.add_argument("--sweep-batch", type=int, default=1024)
    ap.add_argument("--note", default="", help="a line for the header (e.g. what else ran)")
    ap.add_argument("--vehicles-sweep", type=int, nargs="+", default=None,
                    help="only the scaling curve: vector-obs steps/s at these vehicle counts "
                         "(batch = the first of --batches)")
    args = ap.parse_args()

    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("\n".join(f"# {line}" for line in bench_header(extra=f"; {now}")))
    if args.note:
        print(f"# note: {args.note}")

    if args.vehicles_sweep:
        base = None
        for n in args.vehicles_sweep:
            r = bench_jax(args.batches[0], "vector", n, args.preset, args.steps)
            base = base or (n, r["steps_per_s"])
            cost = base[1] / r["steps_per_s"] / (n / base[0])  # per-vehicle cost vs the first
            print(f"vehicles {n:>4} batch {r['batch']:>5} compile {r['compile_s']:>5.1f} s "
                  f"{r['steps_per_s']:>12,.0f} steps/s  step cost per vehicle x{cost:.2f}",
                  flush=True)
        return

    hw = bench_highway(args.vehicles, args.highway_seconds) if args.highway_seconds > 0 else None
    if hw is not None:
        print(f"\nhighway-env highway-v0, vehicles_count={args.vehicles}, policy_frequency = "
              f"simulation_frequency = 10 (0.1 s per step): {hw:,.1f} steps/s")
    lc = ", ".join(f"{k}={v}" for k, v in LANE_CHANGES.items())
    print(f"\nDrivingEnv preset={args.preset}, {args.vehicles} background vehicles, 0.1 s per "
          f"step, AutoReset, random continuous actions; road users on = {ROAD_USERS} + lane "
          f"changes ({lc})")
    head = f"{'obs, world':<22} {'batch':>6} {'compile s':>9} {'steps/s':>13} {'x highway':>11}"
    print(head)
    best = None
    for b in args.batches:
        for label, world in (("vector, users off", {}), ("vector, users on", ALL_ON)):
            r = bench_jax(b, "vector", args.vehicles, args.preset, args.steps, world)
            _row(label, r, hw)
            if world and (best is None or r["steps_per_s"] > best["steps_per_s"]):
                best = r
    for b in args.bev_batches:
        for label, world in (("BEV + meas., users off", {}), ("BEV + meas., users on", ALL_ON)):
            r = bench_jax(b, "bev", args.vehicles, args.preset, args.steps // 8, world)
            _row(label, r, hw)
    if best is not None:
        line = (f"\nbest with road users on: {best['steps_per_s']:,.0f} steps/s (vector, batch "
                f"{best['batch']})")
        if hw:
            line += f" = {best['steps_per_s'] / hw:,.0f}x highway-env at equal dt"
        print(line)

    if args.additions_batch:
        b = args.additions_batch
        print(f"\ncost of each addition (vector obs, batch {b}); extra = microseconds per env "
              "step over road users off")
        print(f"{'world':<22} {'compile s':>9} {'steps/s':>13} {'extra us':>9} {'x highway':>11}")
        adds = [("road users off", {})]
        adds += [(k, {k: v}) for k, v in ROAD_USERS.items()]
        adds += [(k, {k: v}) for k, v in LANE_CHANGES.items()]
        adds += [("all on", ALL_ON)]
        base = None
        for label, world in adds:
            r = bench_jax(b, "vector", args.vehicles, args.preset, args.steps, world)
            base = base or r["steps_per_s"]
            extra = 1e6 / r["steps_per_s"] - 1e6 / base
            print(f"{label:<22} {r['compile_s']:>9.1f} {r['steps_per_s']:>13,.0f} {extra:>9.3f} "
                  f"{_ratio(r['steps_per_s'], hw)}", flush=True)

    if args.sweep:
        b = args.sweep_batch
        print(f"\nscaling over road users (vector obs, batch {b}); cost = microseconds per env "
              "step per road user")
        print(f"{'road users':>10} {'vehicles':>8} {'walkers':>8} {'steps/s':>13} {'cost us':>8}")
        for split in ("vehicles", "half walkers"):
            for n in args.sweep:
                w = n // 2 if split == "half walkers" else 0
                r = bench_jax(b, "vector", n - w, args.preset, args.steps // 8,
                              {"num_walkers": w} if w else {})
                print(f"{n:>10} {n - w:>8} {w:>8} {r['steps_per_s']:>13,.0f} "
                      f"{1e6 / r['steps_per_s'] / n:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
