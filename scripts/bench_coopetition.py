"""Benchmark the JAX coopetition games against the reference NumPy implementation.

Env steps/s of jit(scan(vmap(AutoReset(game).step))) with uniform random actions in
[0, e_i] at several batch sizes (compile time apart), beside the reference's own step
loop (vikpant/strategic-coopetition: `env.step` in Python, reset when an episode ends,
the same random actions) measured in a subprocess of the same run (the reference puts
its own `envs` package on sys.path), with the ratio; then MARL training throughput
(IPPO / MAPPO, env steps per second including the updates).

    git -C <mirror> archive HEAD coopetition_gym/coopetition_gym | tar -x -C /tmp/coop_ref
    python scripts/bench_coopetition.py --ref /tmp/coop_ref/coopetition_gym
    python scripts/bench_coopetition.py --ref '' --batches 1 1024 65536   # JAX only
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

GAMES = ("TrustDilemma-v0", "SLCD-v0", "PublicGoods-v0", "ReciprocalDilemma-v0")


def bench_reference(ref: str, game: str, seconds: float) -> dict:
    """The reference's Gymnasium step loop (run in a subprocess: see module docstring)."""
    code = f"""
import sys, time, json, numpy as np
sys.path.insert(0, {ref!r})
import coopetition_gym
env = coopetition_gym.make({game!r})
rng = np.random.default_rng(0)
e = np.asarray(env.endowments, np.float32)
env.reset(seed=0)
steps, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    for _ in range(100):
        _, _, te, tr, _ = env.step(rng.uniform(0, 1, e.shape).astype(np.float32) * e)
        steps += 1
        if te or tr:
            env.reset()
print(json.dumps(dict(steps=steps, seconds=time.perf_counter() - t0)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=seconds * 5 + 120)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(game=game, steps_per_s=r["steps"] / r["seconds"])


def bench_jax(game: str, batch: int, steps_total: int) -> dict:
    import jax

    import envs
    from mo_rl.bench import env_steps_per_s
    from mo_rl.wrappers import AutoReset

    env, params = envs.make(game)
    env = AutoReset(env)
    high = params.endowment[:, None]
    t_len = int(max(10, min(2000, steps_total // batch)))
    r = env_steps_per_s(env, params, batch, t_len,
                        lambda k, n: jax.random.uniform(k, (n, *high.shape)) * high)
    return dict(game=game, batch=batch, compile_s=r["compile_s"],
                steps_per_s=r["steps_per_s"])


def bench_marl(game: str, algo: str, seeds: int, num_envs: int, updates: int) -> dict:
    import jax

    import envs
    from agents.marl import MARLConfig, make_agent
    from mo_rl.agent import run_updates

    env, params = envs.make(game)
    cfg = MARLConfig(algo=algo, num_envs=num_envs, num_steps=100,
                     minibatch_size=num_envs * 25, total_timesteps=num_envs * 100 * updates)
    agent = make_agent(cfg, env, params)

    def train(key):
        return run_updates(agent, agent.init(key), updates)

    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(train)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys))  # warm-up
    t0 = time.perf_counter()
    _, m = compiled(keys)
    jax.block_until_ready(m)
    dt = time.perf_counter() - t0
    return dict(game=game, algo=algo, seeds=seeds, num_envs=num_envs, compile_s=compile_s,
                steps_per_s=seeds * num_envs * 100 * updates / dt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="/tmp/coop_ref/coopetition_gym",
                    help="folder holding the reference package ('' skips the reference)")
    ap.add_argument("--games", nargs="*", default=list(GAMES))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 1024, 65536])
    ap.add_argument("--steps-total", type=int, default=4_000_000,
                    help="env steps per timed call (scan length = this / batch, 10..2000)")
    ap.add_argument("--ref-seconds", type=float, default=5.0)
    ap.add_argument("--marl-updates", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args()

    import jax

    import mo_rl  # noqa: F401  (XLA flags before JAX starts)

    lines = [f"# bench_coopetition\n\ncommand: `python {' '.join(sys.argv)}`\n",
             f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
             f"jax {jax.__version__}, devices {jax.devices()}\n"]
    ref_ok = bool(args.ref) and (Path(args.ref) / "coopetition_gym" / "__init__.py").exists()
    if args.ref and not ref_ok:
        print(f"no reference at {args.ref}: JAX figures only", flush=True)
    lines.append("| game | batch | JAX steps/s | compile s | reference steps/s | ratio |")
    lines.append("|---|---|---|---|---|---|")
    for game in args.games:
        ref = bench_reference(args.ref, game, args.ref_seconds) if ref_ok else None
        for b in args.batches:
            r = bench_jax(game, b, args.steps_total)
            ref_s = f"{ref['steps_per_s']:,.0f}" if ref else "-"
            ratio = f"{r['steps_per_s'] / ref['steps_per_s']:,.1f}x" if ref else "-"
            lines.append(f"| {game} | {b} | {r['steps_per_s']:,.0f} | {r['compile_s']:.1f} | "
                         f"{ref_s} | {ratio} |")
            print(lines[-1], flush=True)
    if args.marl_updates:
        lines += ["", "MARL training (env steps/s incl. updates; 100-step rollouts, "
                  "4 epochs x 4 mini-batches):", "",
                  "| game | algo | seeds x envs | steps/s | compile s |", "|---|---|---|---|---|"]
        for algo, seeds, n_envs in (("ippo", 1, 16), ("ippo", 8, 16), ("mappo", 8, 16),
                                    ("ippo", 1, 256)):
            r = bench_marl("TrustDilemma-v0", algo, seeds, n_envs, args.marl_updates)
            lines.append(f"| {r['game']} | {algo} | {seeds} x {n_envs} | "
                         f"{r['steps_per_s']:,.0f} | {r['compile_s']:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
