"""Driving-simulator speed of several code versions, side by side in one run.

    python scripts/bench_driving_versions.py b7587e2 0c88b98 HEAD --batches 256 4096

Each version is checked out into a temporary git worktree and timed by the same harness
(this file, run as a child with that worktree first on PYTHONPATH): the quick preset,
vector observations, 16 background vehicles, road users off, AutoReset, random
continuous actions, one jitted scan of vmapped steps; compile time apart, best of
`--repeats` timed calls. Versions alternate within each round, so a load change on the
machine hits every version alike. This answers "is the simulator still as fast as at
commit X" without trusting figures measured on another day.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(batch: int, repeats: int) -> None:
    """Time the env of whatever checkout is first on PYTHONPATH; print one JSON line."""
    import jax
    import jax.numpy as jnp

    import mo_rl  # noqa: F401  (XLA flags)
    from envs.driving import make_driving
    from mo_rl.wrappers import AutoReset

    env, params = make_driving("quick", obs_type="vector", max_vehicles=16, num_vehicles=16)
    env = AutoReset(env)
    space = env.action_space(params)
    steps = max(10, min(1000, 400_000 // batch))

    def run(key):
        _, st = jax.vmap(env.reset, (0, None))(jax.random.split(key, batch), params)

        def body(carry, k):
            st, acc = carry
            ka, ks = jax.random.split(k)
            a = jax.vmap(space.sample)(jax.random.split(ka, batch))
            r = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(ks, batch), st, a, params)
            return (r.state, acc + r.obs.sum() + r.reward.sum()), None

        (_, acc), _ = jax.lax.scan(body, (st, jnp.float32(0)), jax.random.split(key, steps))
        return acc

    f = jax.jit(run)
    t0 = time.perf_counter()
    f(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - t0
    best = 0.0
    for i in range(repeats):
        t0 = time.perf_counter()
        f(jax.random.PRNGKey(i + 1)).block_until_ready()
        best = max(best, batch * steps / (time.perf_counter() - t0))
    print(json.dumps({"compile_s": compile_s, "steps_per_s": best}))


def commit_of(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # the timed process, inside one version's worktree
        return child(int(argv[1]), int(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+", help="git revisions; the first is the reference")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)

    from mo_rl.results import bench_header

    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for line in bench_header(extra=f"; {now}"):
        print(f"# {line}")
    if args.note:
        print(f"# note: {args.note}")
    commits = [commit_of(r) for r in args.revs]
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for c in commits:
            trees[c] = Path(tmp) / c
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[c]), c], cwd=ROOT,
                           check=True, capture_output=True)
        try:
            for rnd in range(args.rounds):
                for b in args.batches:
                    for c in commits:
                        env = {**os.environ, "PYTHONPATH": str(trees[c])}
                        out = subprocess.run([sys.executable, __file__, "--child", str(b),
                                              str(args.repeats)], env=env, check=True,
                                             capture_output=True, text=True, cwd=trees[c])
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        best[c, b] = max(best.get((c, b), 0.0), r["steps_per_s"])
                        print(f"round {rnd + 1} batch {b:5d} {c}: {r['steps_per_s']:12,.0f} "
                              f"steps/s (compile {r['compile_s']:.1f} s)", flush=True)
        finally:
            for c in commits:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[c])],
                               cwd=ROOT, capture_output=True)
    print("\nbest over rounds (steps/s), ratio to the first version")
    print("batch " + "".join(f"{r:>22}" for r in args.revs))
    for b in args.batches:
        ref = best[commits[0], b]
        print(f"{b:5d} " + "".join(f"{best[c, b]:>14,.0f} ({best[c, b] / ref:4.2f}x)"
                                   for c in commits))


if __name__ == "__main__":
    main()
