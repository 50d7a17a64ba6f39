"""RewardSpec: preorder validation, level normalisation, bounds and directions."""

import numpy as np
import pytest

from mo_rl import RewardSpec
from mo_rl.reward import PreorderError

DRIVING = ("safety", "rules", "progress", "comfort")


def test_chain_with_tie_gives_levels():
    spec = RewardSpec(DRIVING, ("safety > rules", "rules > progress", "progress ~ comfort"))
    assert spec.levels == ((0,), (1,), (2, 3))
    np.testing.assert_array_equal(spec.level_of, [0, 1, 2, 2])
    assert spec.level_mask.shape == (3, 4)
    assert spec.describe() == "[safety] > [rules] > [progress ~ comfort]"


def test_less_than_is_the_reverse_relation():
    a = RewardSpec(("x", "y"), ("x > y",))
    b = RewardSpec(("x", "y"), ("y < x",))
    assert a.levels == b.levels == ((0,), (1,))


def test_incomparable_components_share_the_top_level():
    spec = RewardSpec(("a", "b", "c"), ("a > b",))
    assert spec.levels == ((0, 2), (1,))


def test_longest_path_depth():
    # a > b > c and a > c: c must sit below b, not at depth 1
    spec = RewardSpec(("a", "b", "c"), ("a > c", "a > b", "b > c"))
    assert spec.levels == ((0,), (1,), (2,))


@pytest.mark.parametrize(
    ("relations", "message"),
    [
        (("a > b", "b > c", "c > a"), "a > b > c > a"),
        (("a ~ b", "b > a"), "tied"),
        (("a > zz",), "unknown component(s) ['zz']"),
        (("a >> b",), "cannot parse"),
        (("a ~ b", "b ~ c", "c > a"), "tied"),
    ],
)
def test_invalid_preorders_name_the_culprits(relations, message):
    with pytest.raises(PreorderError) as err:
        RewardSpec(("a", "b", "c"), relations)
    assert message in str(err.value)


def test_bad_bounds_and_directions():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        RewardSpec(("a", "b"), low=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="low > high"):
        RewardSpec(("a", "b"), low=(0.0, 1.0), high=(1.0, 0.0))
    with pytest.raises(ValueError, match="'max' or 'min'"):
        RewardSpec(("a", "b"), directions=("max", "up"))
    with pytest.raises(ValueError, match="unique"):
        RewardSpec(("a", "a"))


def test_oriented_and_check_reward():
    spec = RewardSpec(("gain", "cost"), directions=("max", "min"))
    np.testing.assert_allclose(spec.oriented(np.array([1.0, 2.0])), [1.0, -2.0])
    spec.check_reward(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="last axis must have length 2"):
        spec.check_reward(np.zeros(3))


def test_spec_is_hashable_and_static():
    a = RewardSpec(("x", "y"), ("x > y",))
    b = RewardSpec(("x", "y"), ("x > y",))
    assert a == b and hash(a) == hash(b)
