"""Benchmark the JAX driving env against highway-env on the same machine.

Measures env steps/s of jit(scan(vmap(AutoReset(env).step))) with random
actions at several batch sizes (compile time reported apart), for the vector
and the BEV observation, and highway-env's `highway-v0` (vehicles_count =
background vehicles, otherwise its defaults: 15 Hz simulation, 1 Hz policy)
with random actions, then prints the ratio.

    python scripts/bench_driving.py                       # defaults below
    python scripts/bench_driving.py --batches 1 256 4096 --highway-seconds 20
    python scripts/bench_driving.py --highway-seconds 0   # no highway-env (e.g. on a GPU box)
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp

import mo_rl  # noqa: F401  (XLA flags before JAX starts)
from envs.driving import make_driving
from mo_rl.wrappers import AutoReset


def bench_jax(batch: int, obs_type: str, vehicles: int, preset: str, steps_total: int,
              action_type: str = "continuous") -> dict:
    env, params = make_driving(preset, obs_type=obs_type, action_type=action_type,
                               max_vehicles=vehicles, num_vehicles=vehicles, bev_size=64)
    env = AutoReset(env)
    space = env.action_space(params)
    t_len = int(max(10, min(1000, steps_total // batch)))

    def run(key, state):
        def body(st, k):
            ka, ks = jax.random.split(k)
            acts = jax.vmap(space.sample)(jax.random.split(ka, batch))
            r = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(ks, batch), st, acts,
                                                    params)
            # use the observation, or XLA drops its computation as dead code
            return r.state, r.reward.sum() + r.obs.astype(jnp.float32).mean()
        st, rs = jax.lax.scan(body, state, jax.random.split(key, t_len))
        return st, rs.sum()

    _, state = jax.jit(jax.vmap(env.reset, (0, None)))(
        jax.random.split(jax.random.PRNGKey(0), batch), params)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.PRNGKey(1), state).compile()
    compile_s = time.perf_counter() - t0
    st, tot = compiled(jax.random.PRNGKey(1), state)  # warm-up
    jax.block_until_ready(tot)
    reps, t0 = 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - t0 < 3.0:
        st, tot = compiled(jax.random.PRNGKey(2 + reps), st)
        jax.block_until_ready(tot)
        reps += 1
    dt = time.perf_counter() - t0
    return dict(batch=batch, obs=obs_type, compile_s=compile_s,
                steps_per_s=batch * t_len * reps / dt, scan_len=t_len)


def bench_highway(vehicles: int, seconds: float) -> float:
    import gymnasium
    import highway_env  # noqa: F401  (registers highway-v0)

    env = gymnasium.make("highway-v0", config={"vehicles_count": vehicles})
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        n += 1
        if term or trunc:
            env.reset()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 1024, 4096])
    ap.add_argument("--bev-batches", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--vehicles", type=int, default=16)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=400_000, help="env steps per timed call")
    ap.add_argument("--highway-seconds", type=float, default=15.0,
                    help="time highway-env for this long; 0 skips it (no ratio column)")
    ap.add_argument("--vehicles-sweep", type=int, nargs="+", default=None,
                    help="only the scaling curve: vector-obs steps/s at these vehicle counts "
                         "(batch = the first of --batches)")
    args = ap.parse_args()
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

    print(f"host: {platform.node()} cpus={jax.local_device_count()} x {jax.devices()[0].platform}"
          f" ({jax.devices()[0].device_kind}); jax {jax.__version__}")
    hw = bench_highway(args.vehicles, args.highway_seconds) if args.highway_seconds > 0 else None
    if hw is not None:
        print(f"highway-env highway-v0 vehicles_count={args.vehicles}: {hw:,.1f} steps/s")
    print(f"\nDrivingEnv preset={args.preset}, {args.vehicles} background vehicles, AutoReset, "
          "random continuous actions")
    print(f"{'obs':>6} {'batch':>6} {'compile s':>10} {'steps/s':>14} {'x highway-env':>14}")
    jobs = [("vector", b, args.steps) for b in args.batches]
    jobs += [("bev", b, args.steps // 8) for b in args.bev_batches]
    rows = []
    for obs_type, b, steps in jobs:  # print each row as it lands: long runs show progress
        r = bench_jax(b, obs_type, args.vehicles, args.preset, steps)
        rows.append(r)
        ratio = f"{r['steps_per_s'] / hw:>14,.0f}" if hw else f"{'-':>14}"
        print(f"{r['obs']:>6} {r['batch']:>6} {r['compile_s']:>10.1f} {r['steps_per_s']:>14,.0f}"
              f" {ratio}", flush=True)
    best = max(rows, key=lambda r: r["steps_per_s"])
    line = f"\nbest: {best['steps_per_s']:,.0f} steps/s ({best['obs']}, batch {best['batch']})"
    if hw:
        line += f" = {best['steps_per_s'] / hw:,.0f}x highway-env ({hw:,.1f} steps/s)"
    print(line)


if __name__ == "__main__":
    main()
