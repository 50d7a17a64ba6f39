"""Scalarisations against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mo_rl import RewardSpec
from mo_rl.scalarize import scalarizer

SPEC = RewardSpec(("safety", "progress", "comfort"), ("safety > progress", "progress > comfort"),
                  low=(-1.0, 0.0, 0.0), high=(0.0, 1.0, 1.0))


def test_weighted_sum_orients_minimised_components():
    spec = RewardSpec(("gain", "cost"), directions=("max", "min"))
    f = scalarizer(spec, "weighted_sum", weights={"cost": 2.0})
    assert float(f(jnp.array([3.0, 1.0]))) == pytest.approx(3.0 - 2.0)
    with pytest.raises(ValueError, match="length 2"):
        scalarizer(spec, "weighted_sum", weights=[1.0, 2.0, 3.0])


def test_lexicographic_orders_like_tuples():
    f = jax.jit(scalarizer(SPEC, "lexicographic", resolution=0.1))
    rng = np.random.default_rng(0)
    # rewards on a grid of the resolution, so lexicographic order is well defined
    r = np.stack([rng.integers(-10, 1, 200) / 10, rng.integers(0, 11, 200) / 10,
                  rng.integers(0, 11, 200) / 10], axis=-1).astype(np.float32)
    s = np.asarray(f(jnp.asarray(r)))
    for i in range(0, 200, 7):
        for j in range(1, 200, 11):
            if tuple(r[i]) > tuple(r[j]):
                assert s[i] > s[j]
    with pytest.raises(ValueError, match="finite bounds"):
        scalarizer(RewardSpec(("a", "b"), ("a > b",)), "lexicographic")


def test_carl_multiplies_progress_by_factors():
    spec = RewardSpec(("progress", "speed_factor", "ttc_factor"))
    f = scalarizer(spec, "carl", factors=("speed_factor", "ttc_factor"))
    assert float(f(jnp.array([2.0, 0.5, 0.5]))) == pytest.approx(0.5)


def test_gated_accumulation():
    f = scalarizer(SPEC, "gated", thresholds={"safety": -0.5, "progress": 0.2})
    # safety passes, progress passes -> all count
    assert float(f(jnp.array([-0.1, 0.3, 0.4]))) == pytest.approx(0.6)
    # progress below its gate -> comfort does not count
    assert float(f(jnp.array([-0.1, 0.1, 0.4]))) == pytest.approx(0.0)
    # safety below its gate -> nothing below counts
    assert float(f(jnp.array([-0.9, 1.0, 1.0]))) == pytest.approx(-0.9)
    with pytest.raises(ValueError, match="one value per priority level"):
        scalarizer(SPEC, "gated", thresholds=[0.0])


def test_unknown_kind():
    with pytest.raises(ValueError, match="choose one of"):
        scalarizer(SPEC, "max")
