"""HERON decision-tree preferences and the Bradley-Terry loss against hand values."""

import jax.numpy as jnp
import numpy as np
import pytest

from mo_rl import RewardSpec
from mo_rl.preference import (
    bradley_terry_loss,
    hierarchical_preference,
    margins,
    ranking_from_spec,
)


def test_ranking_from_spec():
    spec = RewardSpec(("theta", "omega", "u"), ("theta > omega", "omega > u"))
    np.testing.assert_array_equal(ranking_from_spec(spec), [0, 1, 2])
    with pytest.raises(ValueError, match="share a priority level"):
        ranking_from_spec(RewardSpec(("a", "b"), ("a ~ b",)))


def test_decision_tree_levels():
    order = jnp.array([1, 0])  # factor 1 is the most important
    sign = jnp.array([1.0, -1.0])  # factor 0 higher is better, factor 1 lower is better
    margin = jnp.array([0.5, 0.5])
    f_i = jnp.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.2], [0.0, 0.2], [0.0, 0.1]])
    f_j = jnp.array([[0.0, 1.0], [0.0, -1.0], [0.0, 0.0], [2.0, 0.0], [0.2, 0.0]])
    labels = hierarchical_preference(f_i, f_j, order, sign, margin)
    # 1: lower factor-1 wins; 2: j wins on factor 1; 3,4: factor 1 within margin, factor 0
    # decides; 5: nothing decides -> skipped
    np.testing.assert_array_equal(labels, [1, -1, 1, -1, 0])


def test_margins_are_sigma_times_std():
    f = jnp.array([[0.0, 1.0], [2.0, 1.0]])
    np.testing.assert_allclose(margins(f, jnp.array([0.5, 2.0])), [0.5, 0.0])


def test_bradley_terry_loss_by_hand():
    r_i = jnp.array([1.0, 0.0, 3.0])
    r_j = jnp.array([0.0, 2.0, 0.0])
    label = jnp.array([1, 1, 0])  # third pair skipped
    loss, info = bradley_terry_loss(r_i, r_j, label)
    expected = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(2.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(info["accuracy"]) == pytest.approx(0.5)
    assert float(info["decided"]) == pytest.approx(2 / 3)
    loss0, _ = bradley_terry_loss(r_i, r_j, jnp.zeros(3))
    assert float(loss0) == 0.0
