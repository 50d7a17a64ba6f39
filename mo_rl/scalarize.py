"""Scalarisations: pure functions from a vector reward (..., K) to a scalar (...).

Any agent can train on any view of any env's reward: agents take a
`scalarization` kind + keyword arguments in their config and call
`scalarizer(env.reward_spec, kind, **kwargs)` once at build time. Every view
first orients the reward (minimised components negated) except "carl", whose
factors are multiplicative and must be used as given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mo_rl.reward import RewardSpec

Scalarizer = Callable[[jax.Array], jax.Array]
KINDS = ("weighted_sum", "lexicographic", "carl", "gated")


def _per_component(spec: RewardSpec, values, what: str, default: float) -> np.ndarray:
    """Weights/thresholds given as None, a scalar, a sequence of K or a {name: value} map."""
    k = len(spec)
    if values is None:
        return np.full(k, default, np.float32)
    if isinstance(values, Mapping):
        out = np.full(k, default, np.float32)
        for name, v in values.items():
            out[spec.index(name)] = v
        return out
    arr = np.asarray(values, np.float32)
    if arr.shape == ():
        return np.full(k, float(arr), np.float32)
    if arr.shape != (k,):
        raise ValueError(
            f"{what} must have one entry per reward component {spec.names} (length {k}); "
            f"got shape {arr.shape}."
        )
    return arr


def weighted_sum(spec: RewardSpec, weights=None) -> Scalarizer:
    """sum_k w_k * oriented r_k (default: all weights 1)."""
    w = jnp.asarray(_per_component(spec, weights, "weights", 1.0) * spec.sign)
    return lambda r: jnp.sum(r * w, axis=-1)


def lexicographic(spec: RewardSpec, resolution: float = 1e-2) -> Scalarizer:
    """A weighted sum whose level weights make any change of `resolution` in a
    level's summed reward outweigh every possible change of all lower levels.

    Needs finite bounds in the RewardSpec (they set the lower levels' ranges).
    """
    w_j = jnp.asarray(lexicographic_weights(spec, resolution) * spec.sign, jnp.float32)
    return lambda r: jnp.sum(r * w_j, axis=-1)


def lexicographic_weights(spec: RewardSpec, resolution: float = 1e-2) -> np.ndarray:
    """The (unsigned) per-component weights of `lexicographic`: the lowest level weighs 1,
    each higher level (range of everything below) / resolution. Divide by the largest to
    give a learner rewards of the top level's scale (same argmax, same preference)."""
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            "lexicographic scalarisation needs finite bounds for every component; "
            f"RewardSpec {spec.names} has low={spec.low}, high={spec.high}. Pass low/high."
        )
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0; got {resolution}.")
    ranges = high - low
    w = np.zeros(len(spec), np.float64)
    below = 0.0  # maximal weighted range of all lower levels
    for members in reversed(spec.levels):
        level_w = 1.0 if below == 0.0 else (below / resolution) * (1.0 + 1e-6)
        w[list(members)] = level_w
        below += level_w * float(np.sum(ranges[list(members)]))
    return w


def carl(spec: RewardSpec, progress: str = "progress", factors: Sequence[str] = ()) -> Scalarizer:
    """CaRL-style multiplicative reward: r[progress] * prod_f r[f] (factors in [0, 1])."""
    p = spec.index(progress)
    idx = jnp.asarray([spec.index(f) for f in factors], jnp.int32)
    return lambda r: r[..., p] * jnp.prod(jnp.take(r, idx, axis=-1), axis=-1)


def gated(spec: RewardSpec, thresholds=None) -> Scalarizer:
    """Gated accumulation: level l's summed (oriented) reward counts only while
    every higher level's summed reward is >= its threshold (per level, given
    per component name or as a sequence of L values; default 0)."""
    num_levels = spec.num_levels
    if isinstance(thresholds, Mapping):
        thr = np.zeros(num_levels, np.float32)
        for name, v in thresholds.items():
            thr[spec.level_of[spec.index(name)]] = v
    elif thresholds is None:
        thr = np.zeros(num_levels, np.float32)
    else:
        thr = np.asarray(thresholds, np.float32).reshape(-1)
        if thr.shape != (num_levels,):
            raise ValueError(
                f"gated thresholds need one value per priority level ({num_levels}: "
                f"{spec.describe()}); got {thr.shape[0]}."
            )
    mask = jnp.asarray(spec.level_mask, jnp.float32)  # (L, K)
    sign = jnp.asarray(spec.sign)
    thr_j = jnp.asarray(thr)

    def fn(r: jax.Array) -> jax.Array:
        level_sums = (r * sign) @ mask.T  # (..., L)
        passed = (level_sums >= thr_j).astype(jnp.float32)
        gate = jnp.cumprod(jnp.concatenate([jnp.ones_like(passed[..., :1]), passed[..., :-1]],
                                           axis=-1), axis=-1)
        return jnp.sum(level_sums * gate, axis=-1)

    return fn


def scalarizer(spec: RewardSpec, kind: str = "weighted_sum", **kwargs) -> Scalarizer:
    """Build the scalar view `kind` of rewards described by `spec`."""
    builders = {"weighted_sum": weighted_sum, "lexicographic": lexicographic,
                "carl": carl, "gated": gated}
    if kind not in builders:
        raise ValueError(f"unknown scalarisation {kind!r}; choose one of {KINDS}.")
    return builders[kind](spec, **kwargs)
