"""IQN training throughput side by side with rejax's IQN (CartPole-v1, one process).

    pip install rejax==0.1.3 gymnax==0.0.9   # bench-only, not a project dependency
    python scripts/bench_iqn_rejax.py --timesteps 12288 --repeats 3

Both sides use rejax 0.1.3's default IQN settings (rejax/algos/iqn.py,
mixins.py, algorithm.py): 1 env, one gradient step per env step, batch 256,
N = N' = 64 fractions, 32 fractions to act and to pick a*, Polyak 0.01 every
step, buffer 131,072, 2,048 warm-up steps, lr 3e-4, (64, 64) swish MLP, 64
cosines, a 64-unit head. rejax's periodic evaluation (128 episodes every 4,096
steps) is replaced by a no-op so both sides time training alone. Each side is
`jit(train)` over one seed (or vmapped seeds with --seeds), compiled apart
(lower + compile), warmed up once, then the sides run in turn --repeats times
(interleaved, so load changes on a shared machine hit both) and each keeps its best.
Ours runs CartPole from envs.classic (the same dynamics as gymnax's).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import platform
import re
import subprocess
import time

import jax
import jax.numpy as jnp

import envs
import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.iqn import IQNConfig, make_agent
from mo_rl.agent import make_train, run_updates


def ours_config(timesteps: int, **overrides) -> IQNConfig:
    return dataclasses.replace(IQNConfig(
        total_timesteps=timesteps, num_envs=1, steps_per_update=1,
        gradient_steps=1, buffer_size=131_072, batch_size=256, learning_starts=2_048,
        gamma=0.99, n_step=1, lr=3e-4, target_update="polyak", polyak_tau=0.01,
        eps_start=1.0, eps_end=0.05, eps_fraction=0.1, hidden=(64, 64), activation="swish",
        num_cosines=64, head_hidden=64, num_tau=64, num_tau_prime=64, num_tau_act=32,
    ), **overrides)


def compiled_train(fn, keys):
    """(compiled train, compile seconds), run once as a warm-up."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys))
    return compiled, compile_s


def interleaved_best(runs: dict, keys, repeats: int) -> dict[str, float]:
    """Best wall time per side, the sides run in turn in every repeat, so a change in the
    machine's load (a shared 2-core VM) hits every side alike rather than one of them."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, compiled in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(keys))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def ours_train(timesteps: int, **overrides):
    env, params = envs.make("CartPole-v1")
    return jax.vmap(make_train(make_agent(ours_config(timesteps, **overrides), env, params)))


def rejax_train(timesteps: int):
    import rejax

    algo = rejax.IQN.create(env="CartPole-v1", total_timesteps=timesteps,
                            eval_freq=timesteps, skip_initial_evaluation=True)
    algo = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros(()))
    return jax.vmap(algo.train)


def profile_ours(variant: str, updates: int = 50, top: int = 15) -> None:
    """Where one of our env steps (+ its gradient step) goes: XLA ops from a perfetto trace
    of `updates` updates after the warm-up, ms per env step, with the jax op they come from."""
    env, params = envs.make("CartPole-v1")
    agent = make_agent(ours_config(10 * 2_048 + updates, variant=variant), env, params)
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    state = jax.jit(lambda s: run_updates(agent, s, 2_048)[0])(state)  # past learning_starts
    compiled = jax.jit(lambda s: run_updates(agent, s, updates)[0]).lower(state).compile()
    jax.block_until_ready(compiled(state))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state))
    print(f"# profile ours {variant}: {(time.perf_counter() - t0) / updates * 1e3:.2f} ms "
          "per env step (untraced)")
    log_dir = f"/tmp/bench_iqn_profile_{time.time_ns()}"
    jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
    jax.block_until_ready(compiled(state))
    jax.profiler.stop_trace()
    with gzip.open(glob.glob(f"{log_dir}/**/perfetto_trace.json.gz", recursive=True)[0]) as f:
        trace = json.load(f)
    total = collections.Counter()
    for e in trace["traceEvents"] if isinstance(trace, dict) else trace:
        if e.get("ph") == "X" and not re.search(r"[A-Z:$]|^(cond|while)", e["name"]):
            total[e["name"]] += e.get("dur", 0)  # XLA ops only (no executors, loops, python)
    hlo = compiled.as_text()
    for name, us in total.most_common(top):
        m = re.search(r"^\s*%" + re.escape(name) + r" = (\S+) .*?op_name=\"([^\"]*)\"", hlo, re.M)
        shape, op = (m.group(1), m.group(2).split("closed_call/")[-1]) if m else ("", "")
        print(f"{us / updates / 1e3:7.3f} ms  {name:28s} {shape:28s} {op[-90:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=12_288, help="env steps per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["iqn"], choices=["iqn", "pr_iqn"],
                    help="ours: pr_iqn times Pr-IQN on CartPole's K=1 reward (dominance path)")
    ap.add_argument("--profile", action="store_true",
                    help="only print where our env step's time goes (XLA ops, per variant)")
    args = ap.parse_args()
    if args.profile:
        for variant in args.variants:
            profile_ours(variant)
        return
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    print(f"# device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{platform.processor() or platform.machine()}; jax {jax.__version__}; code {rev}")
    print(f"# timesteps per seed: {args.timesteps} (2,048 warm-up); best of {args.repeats}")
    print("| seeds | side | compile s | run s | env steps/s | ratio ours / rejax |")
    print("|---|---|---|---|---|---|")
    for seeds in args.seeds:
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        fns = {"rejax IQN": rejax_train(args.timesteps)}
        fns.update({f"ours {v}": ours_train(args.timesteps, variant=v) for v in args.variants})
        runs, compile_s = {}, {}
        for name, fn in fns.items():
            runs[name], compile_s[name] = compiled_train(fn, keys)
        best = interleaved_best(runs, keys, args.repeats)
        sps = {name: seeds * args.timesteps / t for name, t in best.items()}
        for name in runs:
            ratio = "" if name == "rejax IQN" else f"{sps[name] / sps['rejax IQN']:.2f}"
            print(f"| {seeds} | {name} | {compile_s[name]:.1f} | {best[name]:.2f} | "
                  f"{sps[name]:,.0f} | {ratio} |", flush=True)

if __name__ == "__main__":
    main()
