"""A tiny multi-objective bandit learner built from mo_rl.agent.Agent, for machinery tests.

A arms with K=2 objectives; each update pulls `batch` arms epsilon-greedily
on the weighted sum of the value table and moves the table towards the
observed (noisy) vector rewards. Every third update reports NaN returns
("no episode finished") so NaN handling is exercised. `init(key, point)`
accepts a grid point {"lr": scalar, "w": (K,)} to test vmapped grids.
`nan_at=u` makes update u (1-based) of every seed in `nan_seeds` (all if empty)
diverge: the table turns NaN and so does that update's loss; "finite" reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from mo_rl.agent import Agent, all_finite
from mo_rl.config import check_positive, check_range

MEANS = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6], [0.2, 0.1]])  # [A, K]


@dataclass(frozen=True)
class ToyConfig:
    lr: float = 0.1
    epsilon: float = 0.2
    batch: int = 16
    num_updates: int = 24
    noise: float = 0.5
    nan_at: int = 0  # 0: never diverge
    nan_seeds: tuple[int, ...] = ()  # which seeds diverge at nan_at (all when empty)

    def __post_init__(self):
        check_positive(self, "lr", "batch", "num_updates")
        check_range(self, "epsilon", 0.0, 1.0)


def make_agent(cfg: ToyConfig) -> Agent:
    a, k = MEANS.shape

    def init(key, point=None):
        lr = jnp.float32(cfg.lr) if point is None else jnp.asarray(point["lr"], jnp.float32)
        w = jnp.ones(k) if point is None else jnp.asarray(point["w"], jnp.float32)
        # runner keys are PRNGKey(seed): the seeds listed in nan_seeds diverge (all if empty)
        bad = jnp.stack([jax.random.PRNGKey(x) for x in cfg.nan_seeds] or [key])
        diverges = jnp.any(jnp.all(bad == key, axis=-1))
        key, sub = jax.random.split(key)
        q = 0.01 * jax.random.normal(sub, (a, k))
        return {"q": q, "key": key, "t": jnp.int32(0), "lr": lr, "w": w, "diverges": diverges}

    def update(s):
        key, k1, k2, k3 = jax.random.split(s["key"], 4)
        greedy = jnp.argmax(s["q"] @ s["w"])
        rand = jax.random.randint(k1, (cfg.batch,), 0, a)
        explore = jax.random.uniform(k2, (cfg.batch,)) < cfg.epsilon
        arms = jnp.where(explore, rand, greedy)
        r = MEANS[arms] + cfg.noise * jax.random.normal(k3, (cfg.batch, k))
        counts = jax.nn.one_hot(arms, a).sum(0)  # [A]
        target = jax.nn.one_hot(arms, a).T @ r  # [A, K] sums
        delta = target - counts[:, None] * s["q"]
        q = s["q"] + s["lr"] * delta / cfg.batch
        t = s["t"] + 1
        q = jnp.where((t == cfg.nan_at) & s["diverges"], jnp.nan, q)
        ret = jnp.where(t % 3 == 0, jnp.nan, r.mean(0))
        m = {
            "env_steps": t * cfg.batch,
            "episode_return": ret,
            "episode_length": jnp.float32(1.0),
            "loss": jnp.mean((r - q[arms]) ** 2),
        }
        m["finite"] = jnp.isfinite(m["loss"]) & all_finite(q)
        return {**s, "q": q, "key": key, "t": t}, m

    def evaluate(s, key):
        greedy = jnp.argmax(s["q"] @ s["w"])
        r = MEANS[greedy] + cfg.noise * jax.random.normal(key, (8, k))
        return {"episode_return": r, "greedy_value": (MEANS[greedy] * s["w"]).sum()}

    return Agent(init=init, update=update, evaluate=evaluate, num_updates=cfg.num_updates)
