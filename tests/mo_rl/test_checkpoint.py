"""Checkpoints: exact round trip, and clear errors (never silent) for bad checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mo_rl.checkpoint import (
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
)

# orbax's background event loop can report "Event loop is closed" at garbage collection
# after a test has finished; it does not affect the saved data.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(seed: int = 0):
    k = jax.random.key(seed)  # typed key: stored as raw key data
    return {
        "params": {"w": jax.random.normal(k, (3, 4)), "b": jnp.arange(4.0)},
        "step": jnp.int32(7),
        "rng": jax.random.split(k, 2),
        "raw": jax.random.PRNGKey(seed),
    }


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert x.dtype == y.dtype


def test_round_trip_exact(tmp_path):
    ck = Checkpointer(tmp_path, "abc", max_to_keep=2)
    assert ck.latest() is None
    for c in (1, 2, 3):
        ck.save(c, _state(c))
    assert ck.chunks() == [2, 3]  # max_to_keep
    state, meta = ck.restore(3, _state(0))
    _assert_same(state, _state(3))
    assert jax.dtypes.issubdtype(state["rng"].dtype, jax.dtypes.prng_key)
    assert meta["chunk"] == 3 and meta["config_hash"] == "abc"
    # no pickle anywhere: metadata is JSON
    json.loads((tmp_path / "chunk_000003" / "meta.json").read_text())


def test_zero_size_leaves_round_trip(tmp_path):
    """A world with no walkers has (seeds, 0, 2) arrays; orbax alone refuses to save them."""
    ck = Checkpointer(tmp_path, "abc")
    state = {**_state(1), "walkers": jnp.zeros((3, 0, 2)), "none": jnp.zeros((0,), jnp.int32)}
    ck.save(1, state)
    like = {**_state(0), "walkers": jnp.ones((3, 0, 2)), "none": jnp.ones((0,), jnp.int32)}
    got, _ = ck.restore(1, like)
    _assert_same(got, state)
    assert got["walkers"].shape == (3, 0, 2) and got["none"].dtype == jnp.int32


def test_config_hash_mismatch(tmp_path):
    Checkpointer(tmp_path, "aaa").save(1, _state())
    msg = r"config hash aaa.*this run's config hash is bbb"
    with pytest.raises(CheckpointMismatchError, match=msg):
        Checkpointer(tmp_path, "bbb").restore(1, _state())


def test_identity_mismatch_names_every_differing_field(tmp_path):
    saved = {"agent": {"lr": 0.1, "hidden": [8]}, "env": {"params": {"n": 5, "p": 0.5}}}
    now = {"agent": {"lr": 0.1, "hidden": [16]}, "env": {"params": {"n": 6, "p": 0.5}},
           "study": {"seeds": 3}}
    Checkpointer(tmp_path, "aaa", identity=saved).save(1, _state())
    with pytest.raises(CheckpointMismatchError) as e:
        Checkpointer(tmp_path, "bbb", identity=now).restore(1, _state())
    msg = str(e.value)
    assert "agent.hidden: saved [8], now [16]" in msg
    assert "env.params.n: saved 5, now 6" in msg
    assert "study.seeds: saved '<absent>', now 3" in msg
    assert "agent.lr" not in msg and "env.params.p" not in msg


def test_shape_mismatch_names_leaf(tmp_path):
    ck = Checkpointer(tmp_path, "h")
    ck.save(1, _state())
    other = _state()
    other["params"]["w"] = jnp.zeros((3, 5))
    with pytest.raises(CheckpointMismatchError, match=r"\['params'\]\['w'\]: saved \[3, 4\]"):
        ck.restore(1, other)
    missing = _state()
    missing["extra"] = jnp.zeros(2)
    with pytest.raises(CheckpointMismatchError, match="missing from checkpoint"):
        ck.restore(1, missing)


def test_incomplete_and_bad_meta(tmp_path):
    ck = Checkpointer(tmp_path, "h")
    d = ck.save(1, _state())
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointCorruptError, match="incomplete"):
        ck.restore(1, _state())
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="not valid JSON"):
        ck.restore(1, _state())


def _data_files(d: Path) -> list[Path]:
    """The tensorstore/OCDBT array data files (under .../d/)."""
    return [p for p in (d / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def test_damaged_array_data_is_detected(tmp_path):
    ck = Checkpointer(tmp_path, "h")
    d = ck.save(1, _state())
    files = _data_files(d)
    assert files, sorted(p.relative_to(d) for p in d.rglob("*"))
    for f in files:  # flip every byte of the array data files: orbax cannot decode them
        raw = bytearray(f.read_bytes())
        f.write_bytes(bytes(b ^ 0xFF for b in raw))
    with pytest.raises(CheckpointCorruptError, match="could not be read"):
        ck.restore(1, _state())


def test_readable_but_wrong_array_data_fails_the_digest(tmp_path):
    """Array data that orbax reads without complaint (another checkpoint's, same layout)
    is caught by the SHA-256 in meta.json, not by an earlier read error."""
    ck = Checkpointer(tmp_path, "h")
    d1, d2 = ck.save(1, _state(1)), ck.save(2, _state(2))
    shutil.rmtree(d1 / "state")
    shutil.copytree(d2 / "state", d1 / "state")
    with pytest.raises(CheckpointCorruptError, match="corrupt: array data SHA-256"):
        ck.restore(1, _state(0))
    _assert_same(ck.restore(2, _state(0))[0], _state(2))  # the source itself is fine


def test_deleted_array_data_is_detected(tmp_path):
    ck = Checkpointer(tmp_path, "h")
    d = ck.save(1, _state())
    for f in _data_files(d):
        f.unlink()
    with pytest.raises(CheckpointCorruptError, match="could not be read"):
        ck.restore(1, _state())


def test_a_field_added_later_at_its_default_still_resumes(tmp_path, capsys):
    """A checkpoint saved before a config field existed trained with the field's default
    behaviour: it resumes when the field is at that default, and is refused otherwise."""
    saved = {"agent": {"lr": 0.1}}
    Checkpointer(tmp_path, "aaa", identity=saved).save(1, _state(1))
    now = {"agent": {"lr": 0.1, "minibatches_per_epoch": 0}}
    got, _ = Checkpointer(tmp_path, "bbb", identity=now, defaults=now).restore(1, _state(0))
    _assert_same(got, _state(1))
    assert "minibatches_per_epoch" in capsys.readouterr().out
    changed = {"agent": {"lr": 0.1, "minibatches_per_epoch": 2}}
    with pytest.raises(CheckpointMismatchError, match="minibatches_per_epoch: saved"):
        Checkpointer(tmp_path, "ccc", identity=changed, defaults={"agent": {"lr": 0.1}}
                     ).restore(1, _state(0))
    # another field differing as well: refused, the added field named with it
    other = {"agent": {"lr": 0.2, "minibatches_per_epoch": 0}}
    with pytest.raises(CheckpointMismatchError, match=r"agent\.lr: saved 0\.1, now 0\.2"):
        Checkpointer(tmp_path, "ddd", identity=other, defaults={"agent": {
            "minibatches_per_epoch": 0}}).restore(1, _state(0))


def test_default_fields_lists_fields_at_their_default():
    from agents.ppo import PPOConfig
    from mo_rl.config import default_fields

    d = default_fields(PPOConfig(lr=1e-3, policy_head_hidden=(8,)))
    assert d["minibatches_per_epoch"] == 0 and d["value_head_hidden"] == []
    assert "lr" not in d and "policy_head_hidden" not in d
