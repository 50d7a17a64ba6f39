"""n-step replay (flashbax trajectory buffer): round trip, windows, wrap-around, jit(vmap)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mo_rl.replay import Transition, make_nstep_replay, time_major_to_batch

NUM_ENVS, E, N = 2, 3, 2


def _block(start: int, k: int = 2) -> Transition:
    """E steps of NUM_ENVS envs, time-major (E, B): obs encodes 100*env + t."""
    t = jnp.arange(start, start + E)[:, None]
    env = jnp.arange(NUM_ENVS)[None, :]
    code = (100 * env + t).astype(jnp.float32)  # (E, B)
    return Transition(
        obs=code[..., None] * jnp.ones(3), action=code.astype(jnp.int32),
        reward=code[..., None] * jnp.ones(k), terminated=jnp.zeros((E, NUM_ENVS), bool),
        truncated=(t % 5 == 4) & jnp.ones((E, NUM_ENVS), bool), next_obs=(code + 1)[..., None]
        * jnp.ones(3))


def _make(capacity=12, batch=64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_nstep_replay(capacity, NUM_ENVS, batch, N, add_length=E)


def test_round_trip_windows_are_consecutive_steps_of_one_env():
    rb = _make()
    example = jax.tree.map(lambda x: x[0, 0], _block(0))
    state = rb.init(example)
    assert not bool(rb.can_sample(state))
    state = rb.add(state, time_major_to_batch(_block(0)))
    assert bool(rb.can_sample(state))
    s = rb.sample(state, jax.random.PRNGKey(0))
    assert s.obs.shape == (64, N, 3) and s.reward.shape == (64, N, 2) and s.action.shape == (64, N)
    code = np.asarray(s.action)
    np.testing.assert_array_equal(code[:, 1], code[:, 0] + 1)  # consecutive in time
    np.testing.assert_array_equal(code[:, 1] // 100, code[:, 0] // 100)  # same env
    # round trip: every field of a sampled step is the stored step with that code
    np.testing.assert_array_equal(np.asarray(s.obs[..., 0]), code)
    np.testing.assert_array_equal(np.asarray(s.next_obs[..., 0]), code + 1)
    np.testing.assert_array_equal(np.asarray(s.reward[..., 1]), code)
    np.testing.assert_array_equal(np.asarray(s.truncated), (code % 100) % 5 == 4)
    assert set(np.unique(code[:, 0] % 100)) <= {0, 1}  # only starts with a full window
    assert set(np.unique(code[:, 0] // 100)) == {0, 1}


def test_wrap_around_drops_oldest_and_keeps_windows_contiguous():
    rb = _make(capacity=12)  # 6 steps per env
    state = rb.init(jax.tree.map(lambda x: x[0, 0], _block(0)))
    for start in (0, 3, 6):  # 9 steps per env written; 6 kept: t = 3..8
        state = rb.add(state, time_major_to_batch(_block(start)))
    s = rb.sample(state, jax.random.PRNGKey(1))
    t0 = np.asarray(s.action[:, 0]) % 100
    t1 = np.asarray(s.action[:, 1]) % 100
    assert t0.min() >= 3 and t1.max() <= 8
    np.testing.assert_array_equal(t1, t0 + 1)  # never across the write head
    assert set(np.unique(t0)) == {3, 4, 5, 6, 7}


def test_too_small_capacity_is_an_error():
    with pytest.raises(ValueError, match="steps_per_update"):
        make_nstep_replay(4, NUM_ENVS, 8, N, add_length=E)


@pytest.mark.timeout(120)
def test_jit_vmap_over_seeds_matches_single_seed():
    rb = _make()
    example = jax.tree.map(lambda x: x[0, 0], _block(0))

    def run(key, offset):
        state = rb.init(example)
        blk = jax.tree.map(lambda x: x + offset.astype(x.dtype), _block(0))
        state = rb.add(state, time_major_to_batch(blk))
        return rb.sample(state, key)

    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    offsets = jnp.array([0, 1000])
    batched = jax.jit(jax.vmap(run))(keys, offsets)
    for i in range(2):
        single = run(keys[i], offsets[i])
        np.testing.assert_array_equal(batched.action[i], single.action)
    assert int(batched.action[1].min()) >= 1000 > int(batched.action[0].max())
