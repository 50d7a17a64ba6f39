"""Training throughput of IQN-family agents: env steps/s (collection + gradient steps).

    python scripts/bench_iqn.py                         # CartPole, iqn, 1 and 16 seeds
    python scripts/bench_iqn.py --env driving --variant pr_iqn

One compiled program trains `seeds` vmapped seeds (jit(vmap(train))); compile
time is measured apart (lower + compile), then the run is timed. Steps/s counts
env transitions of all seeds together, each followed by its share of gradient
steps (`gradient_steps` per `num_envs * steps_per_update` transitions).

Known CPU hang (jaxlib 0.10, see README): ensemble-IQN on the driving env with 5 members and
5 vmapped seeds (4000 steps) stalls at 0% CPU in execution in most tries (4 of 5 here),
with or without --xla_cpu_multi_thread_eigen=false; a run that does finish takes ~30 s.
"""

from __future__ import annotations

import argparse
import time

import jax

import envs
import mo_rl  # noqa: F401  (XLA flags before JAX runs anything)
from agents.iqn import make_agent, preset
from mo_rl.agent import make_train

ENVS = {"cartpole": ("CartPole-v1", "cartpole"), "driving": ("driving", "driving_quick")}


def make_env(name: str):
    if name == "driving":  # the study's setting: discrete meta-actions, vector reward
        from experiments.driving_pr_iqn import PRESETS, make_env

        return make_env(PRESETS["quick"])
    return envs.make(name)


def bench(env_name: str, preset_name: str, variant: str, seeds: int, timesteps: int,
          ensemble_size: int = 3) -> dict:
    env, params = make_env(env_name)
    cfg = preset(preset_name, variant=variant, total_timesteps=timesteps,
                 learning_starts=min(1_000, timesteps // 4), ensemble_size=ensemble_size)
    agent = make_agent(cfg, env, params)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    fn = jax.jit(jax.vmap(make_train(agent)))
    t0 = time.perf_counter()
    compiled = fn.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0
    steps = seeds * agent.num_updates * cfg.steps_per_iteration
    grads = seeds * agent.num_updates * cfg.gradient_steps
    return dict(env=env_name, variant=variant, seeds=seeds, steps=steps, compile_s=compile_s,
                run_s=run_s, steps_per_s=steps / run_s, grad_steps_per_s=grads / run_s,
                num_envs=cfg.num_envs, E=cfg.steps_per_update, G=cfg.gradient_steps,
                batch=cfg.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", choices=sorted(ENVS), nargs="+", default=["cartpole"])
    ap.add_argument("--variant", nargs="+", default=["iqn"],
                    choices=["iqn", "ensemble", "pr_iqn"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--timesteps", type=int, default=8_000, help="env steps per seed")
    ap.add_argument("--ensemble-size", type=int, default=3)
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"{'env':<12}{'variant':<10}{'seeds':>6}{'steps':>9}{'compile s':>11}{'run s':>8}"
          f"{'steps/s':>10}{'grad/s':>9}  config")
    for name in args.env:
        env_name, preset_name = ENVS[name]
        try:
            make_env(env_name)
        except (ImportError, KeyError) as e:
            print(f"{name}: env not available ({e}); skipped")
            continue
        for variant in args.variant:
            for seeds in args.seeds:
                r = bench(env_name, preset_name, variant, seeds, args.timesteps, args.ensemble_size)
                print(f"{name:<12}{variant:<10}{seeds:>6}{r['steps']:>9}{r['compile_s']:>11.1f}"
                      f"{r['run_s']:>8.1f}{r['steps_per_s']:>10.0f}{r['grad_steps_per_s']:>9.0f}"
                      f"  envs={r['num_envs']} E={r['E']} G={r['G']} batch={r['batch']}",
                      flush=True)


if __name__ == "__main__":
    main()
