"""Training throughput of our PPO vs PureJaxRL's PPO, side by side in one process.

    python scripts/bench_ppo.py --purejaxrl-path /tmp/purejaxrl
    python scripts/bench_ppo.py --no-purejaxrl --driving vector  # ours only, + driving sim

Both sides use PureJaxRL's CartPole-v1 defaults (4 envs x 128 steps, 4 epochs
x 4 minibatches, tanh 64x64 actor and critic, lr 2.5e-4 annealed) and are
timed as `jit(vmap(train))` over seeds: compile time is measured apart (AOT
lower + compile), then the compiled run is warmed up once, repeated, and the
best wall time counts. Steps/s = seeds x updates x num_envs x num_steps / run time.

Our side runs envs.classic.CartPole (the same physics as gymnax CartPole-v1)
through mo_rl's wrappers, with truncation bootstrapping (an extra batched
critic pass over the final observations) that PureJaxRL does not do.
PureJaxRL side: their purejaxrl/ppo.py imported from a local checkout
(`--purejaxrl-path`, never vendored here); it needs gymnax. Their wrappers.py
imports brax and navix only for other envs, so empty stand-ins are installed
when those packages are missing.

"cores busy" is the process CPU time over the wall time of the timed run. On
the CPU, XLA's thunk executor hands ready kernels to a second worker thread
when it can; for small problems that hand-off can cost more than it saves,
which shows up as cores busy > 1 with no speed-up. To compare both sides on
one core: `taskset -c 0 python scripts/bench_ppo.py ...`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np

import mo_rl  # noqa: F401  (XLA flags before JAX starts)
from agents.ppo import PPOConfig, make_agent
from mo_rl.agent import make_train
from mo_rl.results import bench_header

PUREJAXRL_CARTPOLE = {
    "LR": 2.5e-4, "NUM_ENVS": 4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5,
    "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh", "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True, "DEBUG": False,
}


def _stub_missing(name: str, **attrs) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
        for k, v in attrs.items():
            setattr(sys.modules[name], k, v)


def load_purejaxrl(path: str):
    src = Path(path).expanduser().resolve()
    pkg = src / "purejaxrl" if (src / "purejaxrl" / "ppo.py").exists() else src
    if not (pkg / "ppo.py").exists():
        raise SystemExit(f"--purejaxrl-path: no ppo.py under {src} (or {src}/purejaxrl).")
    _stub_missing("brax.envs.wrappers.training", EpisodeWrapper=object, AutoResetWrapper=object)
    _stub_missing("navix")
    sys.path.insert(0, str(pkg))
    return importlib.import_module("ppo")


def time_fn(fn, keys, repeats: int) -> tuple[float, float, float, object]:
    """(compile s, best run s, CPU cores busy in that run, output)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys))  # untimed warm-up (first-run allocations, GPU autotune)
    best, busy, out = np.inf, np.nan, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(keys))
        wall = time.perf_counter() - t0
        if wall < best:
            best, busy = wall, (time.process_time() - c0) / wall
    return compile_s, best, busy, out


def ours(num_envs: int, total: int, seeds: int, repeats: int, env_name: str = "cartpole",
         bootstrap_truncated: bool = True):
    if env_name == "cartpole":
        from envs.classic import CartPole

        env = CartPole()
        cfg = PPOConfig.cartpole(num_envs=num_envs, total_timesteps=total,
                                 minibatch_size=num_envs * 128 // 4,
                                 bootstrap_truncated=bootstrap_truncated)
        ret = lambda m: m["episode_return"][..., 0]
    else:  # the driving sim as experiments/carl_minibatch.py's quick preset trains it
        from envs.driving import make_driving

        env, _ = make_driving("quick", reward="carl", action_type="continuous",
                              obs_type=env_name, max_vehicles=8, num_vehicles=8)
        cfg = PPOConfig.carl(num_envs=num_envs, num_steps=128, total_timesteps=total,
                             minibatch_size=num_envs * 128 // 4, hidden=(128, 128),
                             activation="relu", shared_torso=env_name == "bev",
                             normalize_obs=True, policy_head_hidden=(128, 128),
                             value_head_hidden=(128, 128))
        ret = lambda m: m["episode_return"].sum(-1)
    agent = make_agent(cfg, env, env.default_params)
    keys = jax.random.split(jax.random.key(0), seeds)
    c, r, busy, (_, m) = time_fn(jax.vmap(make_train(agent)), keys, repeats)
    steps = seeds * agent.num_updates * cfg.batch_size
    return c, r, busy, steps, float(np.nanmean(np.asarray(ret(m))[:, -5:]))


def theirs(pj, num_envs: int, total: int, seeds: int, repeats: int):
    config = dict(PUREJAXRL_CARTPOLE, NUM_ENVS=num_envs, TOTAL_TIMESTEPS=total)
    train = pj.make_train(dict(config))
    keys = jax.random.split(jax.random.key(0), seeds)
    c, r, busy, out = time_fn(jax.vmap(train), keys, repeats)
    updates = int(total // config["NUM_STEPS"] // num_envs)
    steps = seeds * updates * num_envs * config["NUM_STEPS"]
    info = out["metrics"]
    done = np.asarray(info["returned_episode"][:, -5:])
    last = float(np.asarray(info["returned_episode_returns"][:, -5:])[done].mean())
    return c, r, busy, steps, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--purejaxrl-path", default="/tmp/purejaxrl")
    ap.add_argument("--no-purejaxrl", action="store_true")
    ap.add_argument("--settings", default="1x4,16x4,1x256",
                    help="comma-separated SEEDSxNUM_ENVS")
    ap.add_argument("--updates", type=int, default=64, help="PPO updates per seed (timed)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--driving", default="", choices=["", "vector", "bev"],
                    help="also time our PPO on envs.driving (quick preset, CaRL reward) with "
                         "this observation type")
    ap.add_argument("--driving-settings", default="1x32,3x32")
    ap.add_argument("--no-bootstrap-truncated", action="store_true",
                    help="our CartPole side without the truncation bootstrap (PureJaxRL has "
                         "none): isolates what that extra critic pass costs")
    ap.add_argument("--out", default="", help="write the table (markdown) here too")
    args = ap.parse_args()
    boot = not args.no_bootstrap_truncated

    pj = None if args.no_purejaxrl else load_purejaxrl(args.purejaxrl_path)
    head = [*bench_header(),
            "ours: envs.classic.CartPole (gymnax-identical physics)"
            f"{' + truncation bootstrap' if boot else ', no truncation bootstrap'}; "
            "PureJaxRL: gymnax CartPole-v1, their ppo.py unchanged", ""]
    print("\n".join(head), flush=True)
    rows = ["| task | seeds x envs | steps/seed | ours compile s | ours steps/s | "
            "ours cores busy | PureJaxRL compile s | PureJaxRL steps/s | "
            "PureJaxRL cores busy | ratio | ours / their last return |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in args.settings.split(","):
        seeds, n = (int(x) for x in s.split("x"))
        total = args.updates * n * 128
        oc, orun, obusy, osteps, oret = ours(n, total, seeds, args.repeats,
                                             bootstrap_truncated=boot)
        line = (f"| CartPole-v1 | {seeds} x {n} | {total} | {oc:.1f} | {osteps / orun:,.0f} | "
                f"{obusy:.2f} | ")
        if pj is not None:
            tc, trun, tbusy, tsteps, tret = theirs(pj, n, total, seeds, args.repeats)
            ratio = (osteps / orun) / (tsteps / trun)
            line += (f"{tc:.1f} | {tsteps / trun:,.0f} | {tbusy:.2f} | {ratio:.2f} | "
                     f"{oret:.0f} / {tret:.0f} |")
        else:
            line += f"- | - | - | - | {oret:.0f} / - |"
        rows.append(line)
        print(line, flush=True)
    if args.driving:
        for s in args.driving_settings.split(","):
            seeds, n = (int(x) for x in s.split("x"))
            total = max(1, args.updates // 8) * n * 128
            oc, orun, obusy, osteps, oret = ours(n, total, seeds, args.repeats, args.driving)
            line = (f"| driving quick, {args.driving} obs (PPO carl preset, 128 steps) | "
                    f"{seeds} x {n} | {total} | {oc:.1f} | {osteps / orun:,.0f} | "
                    f"{obusy:.2f} | - | - | - | - | {oret:.2f} / - |")
            rows.append(line)
            print(line, flush=True)
    table = "\n".join(rows)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(head) + "\n" + table + "\n")


if __name__ == "__main__":
    main()
