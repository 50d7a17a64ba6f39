"""sim.keep (materialise arrays against XLA's fusion duplication) must not change values."""

import jax
import jax.numpy as jnp
import numpy as np

from envs.driving import sim


def test_keep_is_exact_for_every_dtype():
    f = jnp.array([-jnp.inf, -1e38, -0.0, 0.0, 1.5, jnp.inf, jnp.nan], jnp.float32)
    i = jnp.array([np.iinfo(np.int32).min, -1, 0, 7, np.iinfo(np.int32).max], jnp.int32)
    u = jnp.array([0, 1, 0xFFFFFFFF], jnp.uint32)
    b = jnp.array([True, False])
    out = jax.jit(lambda *xs: sim.keep(*xs))(f, i, u, b)
    for x, y in zip((f, i, u, b), out, strict=True):
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    assert np.signbit(np.asarray(out[0])[2])  # -0.0 kept
    single = sim.keep(i)
    np.testing.assert_array_equal(np.asarray(single), np.asarray(i))
