"""Overhead of the host-env adapter: the same gymnasium vector env stepped inside a jitted
lax.scan (mo_rl.batching.batched over envs.adapters.gymnasium_in: one ordered io_callback
per step) vs in a plain Python loop, side by side in one run.

    python scripts/bench_host_envs.py                          # CartPole-v1, highway-fast-v0
    python scripts/bench_host_envs.py --envs CartPole-v1 --num-envs 1 8 --out results/bench/x.md

Both sides step a SyncVectorEnv (SAME_STEP auto-reset) of n fresh copies with the same
pre-drawn random actions; the plain loop converts the results to numpy float32/bool
arrays as the adapter does. Steps/s = n x steps / wall time of the run, best of
`--repeats`; the adapter's compile time (AOT lower + compile) is measured apart, and
its environment sets are built and reset before the clock starts on both sides.
Goal (issue 14): adapter >= 0.8 x the plain loop.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

import mo_rl  # noqa: F401  (XLA flags before JAX starts)
from envs.adapters.gymnasium_in import GymnasiumIn, make_host_env
from mo_rl.batching import batched
from mo_rl.results import bench_header

TOTAL_STEPS = {"CartPole-v1": 16_384, "highway-fast-v0": 1_024}  # env steps per measurement


def _plain(env_id: str, n: int, actions: np.ndarray, seed: int) -> float:
    vec = gymnasium.vector.SyncVectorEnv(
        [lambda: make_host_env(env_id)] * n,
        autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    vec.reset(seed=[seed + i for i in range(n)])
    t = time.perf_counter()
    for a in actions:
        obs, rew, term, trunc, info = vec.step(a)
        obs = np.asarray(obs, np.float32)
        rew = np.asarray(rew, np.float32)
        done = term | trunc
        if done.any():
            final = obs.copy()
            final[done] = np.stack(info["final_obs"][done])
    wall = time.perf_counter() - t
    vec.close()
    return wall


def _adapter(env_id: str, n: int, actions: np.ndarray) -> tuple[float, float]:
    env = GymnasiumIn(env_id)
    venv = batched(env, n)
    p = env.default_params
    keys = jax.random.split(jax.random.key(0), n)

    def rollout(state, acts):
        def body(s, a):
            r = venv.step(keys, s, a, p)
            return r.state, r.reward[:, 0]

        return jax.lax.scan(body, state, acts)

    acts = jnp.asarray(actions, jnp.int32)
    _, state = jax.block_until_ready(jax.jit(venv.reset)(keys, p))
    t = time.perf_counter()
    compiled = jax.jit(rollout).lower(state, acts).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(compiled(state, acts))
    wall = time.perf_counter() - t
    venv.close()
    env.close()
    return wall, compile_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", nargs="+", default=list(TOTAL_STEPS))
    ap.add_argument("--num-envs", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    with contextlib.suppress(ImportError):
        import highway_env  # noqa: F401  (registers highway-*)

    head = [
        *bench_header(extra=f", gymnasium {gymnasium.__version__}"),
        "",
        "| env | num_envs | steps | plain loop steps/s | adapter steps/s | ratio | "
        "adapter compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head), flush=True)
    rows = []
    for env_id in args.envs:
        n_act = make_host_env(env_id).action_space.n
        for n in args.num_envs:
            steps = max(1, TOTAL_STEPS.get(env_id, 4096) // n)
            actions = np.random.default_rng(0).integers(0, n_act, (steps, n))
            plain, ours, comp = [], [], 0.0
            for _ in range(args.repeats):  # interleaved, so drifts hit both sides
                plain.append(_plain(env_id, n, actions, seed=0))
                w, comp = _adapter(env_id, n, actions)
                ours.append(w)
            sp, so = n * steps / min(plain), n * steps / min(ours)
            row = (f"| {env_id} | {n} | {n * steps} | {sp:,.0f} | {so:,.0f} | {so / sp:.2f} | "
                   f"{comp:.2f} |")
            rows.append(row)
            print(row, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    main()
