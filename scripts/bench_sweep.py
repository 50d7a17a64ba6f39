"""Time a small study for 1, 4, 16, 64 vmapped seeds (compile time reported apart).

    python scripts/bench_sweep.py                       # PPO on PreorderedShortcut (demo agent)
    python scripts/bench_sweep.py --seeds 1 4 --updates 20 --out runs/bench.md

For each seed count: AOT compile time of one runner chunk (jit(vmap) of
`mo_rl.agent.run_updates`), then the wall time of `--repeats` chunks of
`--updates` updates, env steps/s over all seeds, and per seed. It also
measures the cost of the optional in-loop progress callback
(`mo_rl.runner.make_chunk(..., tap_every)`: a jax.debug.callback after every
block of updates) against the plain chunk at `--tap-seeds` seeds. Uses the
devices the sweep would use (sharded over all local devices when possible).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import mo_rl  # noqa: F401  (XLA flags first)
from agents.ppo import PPOConfig, make_agent
from mo_rl import sweep
from mo_rl.agent import Agent
from mo_rl.runner import make_chunk


def time_chunks(agent: Agent, n: int, updates: int, repeats: int, tap_every: int | None = None):
    """(compile s, median chunk s) for the runner's chunk program at n seeds."""
    mesh = sweep.seed_mesh(n)
    sh = sweep.seed_sharding(mesh)
    vagent = agent._replace(init=jax.vmap(agent.init), update=jax.vmap(agent.update))
    state = jax.jit(vagent.init, out_shardings=sh)(sweep.put_seeds(sweep.seed_keys(range(n)),
                                                                     mesh))
    calls = []
    chunk = make_chunk(vagent, updates, tap_every, lambda steps, ret: calls.append(steps))
    t0 = time.perf_counter()
    compiled = jax.jit(chunk, out_shardings=sh).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state)  # warm-up (first call allocates)
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = compiled(state)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--updates", type=int, default=10, help="updates per timed chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tap-seeds", type=int, default=16)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()

    from envs.toy import PreorderedShortcut

    cfg = PPOConfig(total_timesteps=256 * 100, num_envs=8, num_steps=32, minibatch_size=64,
                    update_epochs=4, hidden=(32, 32), eval_episodes=4, eval_max_steps=50)
    agent = make_agent(cfg, PreorderedShortcut())
    steps_per_update = cfg.num_envs * cfg.num_steps
    dev = jax.devices()
    lines = [
        f"PPO on PreorderedShortcut ({cfg.num_envs} envs x {cfg.num_steps} steps per update, "
        f"{cfg.update_epochs} epochs x {cfg.num_minibatches} minibatches, MLP {cfg.hidden}); "
        f"{len(dev)} x {dev[0].device_kind} ({jax.default_backend()}); "
        f"chunk = {args.updates} updates, median of {args.repeats}",
        "",
        "| seeds | devices | compile s | chunk s | env steps/s (all seeds) | steps/s per seed |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n in args.seeds:
        c, t = time_chunks(agent, n, args.updates, args.repeats)
        sps = n * args.updates * steps_per_update / t
        ndev = sweep.seed_mesh(n).devices.size
        row = f"| {n} | {ndev} | {c:.2f} | {t:.3f} | {sps:,.0f} | {sps / n:,.0f} |"
        lines.append(row)
        print(row, flush=True)
    n = args.tap_seeds
    _, plain = time_chunks(agent, n, args.updates, args.repeats)
    tail = ["", f"In-loop progress (runner `in_loop_progress`, a jax.debug.callback after every "
            f"block of updates), {n} seeds, chunk of {args.updates} updates: plain {plain:.3f} s"]
    for every in (1, args.updates // 2, args.updates):
        _, tapped = time_chunks(agent, n, args.updates, args.repeats, tap_every=every)
        tail.append(f"- callback every {every} update(s): {tapped:.3f} s per chunk "
                    f"({100 * (tapped / plain - 1):+.1f}%)")
    tail.append("The runner's default progress (between chunks, on the host, overlapped with the "
                "next chunk) adds no work to the compiled chunk.")
    lines += tail
    print("\n".join(tail))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
