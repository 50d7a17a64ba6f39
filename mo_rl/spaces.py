"""Jittable observation / action spaces (a small gymnax-like subset).

Kept separate from gymnasium.spaces because these must sample and check
inside jit; `to_gymnasium` converts at the host boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Discrete:
    n: int
    shape: tuple[int, ...] = ()
    dtype: type = jnp.int32

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.all((x >= 0) & (x < self.n) & (jnp.floor(x) == x))

    def to_gymnasium(self) -> gymnasium.Space:
        if self.shape == ():
            return gymnasium.spaces.Discrete(self.n)
        return gymnasium.spaces.MultiDiscrete(np.full(self.shape, self.n))


@dataclass(frozen=True)
class Box:
    low: float | np.ndarray
    high: float | np.ndarray
    shape: tuple[int, ...]
    dtype: type = jnp.float32

    def sample(self, key: jax.Array) -> jax.Array:
        low = jnp.broadcast_to(jnp.asarray(self.low, jnp.float32), self.shape)
        high = jnp.broadcast_to(jnp.asarray(self.high, jnp.float32), self.shape)
        if jnp.issubdtype(self.dtype, jnp.integer):
            return jax.random.randint(key, self.shape, low, high + 1).astype(self.dtype)
        # unbounded dimensions sample from a standard normal
        finite = jnp.isfinite(low) & jnp.isfinite(high)
        u = jax.random.uniform(key, self.shape)
        z = jax.random.normal(key, self.shape)
        return jnp.where(finite, low + u * (high - low), z).astype(self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return (x.shape == self.shape) and jnp.all((x >= self.low) & (x <= self.high))

    def to_gymnasium(self) -> gymnasium.Space:
        low = np.broadcast_to(np.asarray(self.low, dtype=np.dtype(self.dtype)), self.shape)
        high = np.broadcast_to(np.asarray(self.high, dtype=np.dtype(self.dtype)), self.shape)
        return gymnasium.spaces.Box(low=low.copy(), high=high.copy(), dtype=np.dtype(self.dtype))



@dataclass(frozen=True)
class Dict:
    """Named sub-spaces: an observation with several parts (e.g. a BEV raster and a
    measurement vector) is a dict of arrays, a pytree the agents' torsos read leaf by leaf."""

    spaces: dict

    def sample(self, key: jax.Array) -> dict:
        keys = jax.random.split(key, len(self.spaces))
        return {k: s.sample(kk) for (k, s), kk in zip(self.spaces.items(), keys, strict=True)}

    def contains(self, x: dict) -> jax.Array:
        if set(x) != set(self.spaces):
            return jnp.asarray(False)
        return jnp.all(jnp.stack([jnp.asarray(s.contains(x[k])) for k, s in self.spaces.items()]))

    def to_gymnasium(self) -> gymnasium.Space:
        return gymnasium.spaces.Dict({k: s.to_gymnasium() for k, s in self.spaces.items()})


Space = Discrete | Box | Dict
