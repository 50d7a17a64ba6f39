"""RewardSpec: named vector-reward components, bounds, directions and a preorder.

A preorder is given as relations between component names:

    "safety > rules"      safety has strictly higher priority than rules
    "rules < safety"      the same relation written the other way
    "progress ~ comfort"  tie: same priority
    (nothing)             incomparable: no relation

Validation rejects unknown names, malformed relations and strict cycles
(including a strict relation inside a tie class), naming the culprits.
Normalisation turns the preorder into priority *levels*: tie classes are
merged, then each class gets its longest-path depth in the strict order;
level 0 is the highest priority. Components that appear in no relation are
incomparable to everything and so sit at level 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import jax.numpy as jnp
import numpy as np

_RELATION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>|<|~)\s*([A-Za-z_][\w.\-]*)\s*$")


class PreorderError(ValueError):
    """An invalid preorder (unknown component, malformed relation, cycle)."""


@dataclass(frozen=True)
class RewardSpec:
    """Names, bounds, directions and preorder of a vector reward of length K.

    Hashable and immutable, so it can be a static argument of jitted code.
    `directions` is "max" (higher is better) or "min" per component; `oriented`
    flips minimised components so that every consumer can assume "higher is
    better".
    """

    names: tuple[str, ...]
    relations: tuple[str, ...] = ()
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    directions: tuple[str, ...] | None = None
    # derived, filled in __post_init__
    levels: tuple[tuple[int, ...], ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        object.__setattr__(self, "names", names)
        k = len(names)
        if k == 0:
            raise ValueError("RewardSpec needs at least one component name.")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"RewardSpec component names must be unique; repeated: {dupes}.")
        object.__setattr__(self, "relations", tuple(self.relations))
        object.__setattr__(self, "low", self._bound("low", self.low, -np.inf))
        object.__setattr__(self, "high", self._bound("high", self.high, np.inf))
        bad = [n for n, lo, hi in zip(names, self.low, self.high, strict=True) if lo > hi]
        if bad:
            raise ValueError(f"RewardSpec bounds have low > high for components {bad}.")
        dirs = ("max",) * k if self.directions is None else tuple(self.directions)
        if len(dirs) != k or any(d not in ("max", "min") for d in dirs):
            raise ValueError(
                f"RewardSpec.directions must be {k} entries of 'max' or 'min' "
                f"(one per component {names}); got {self.directions!r}."
            )
        object.__setattr__(self, "directions", dirs)
        object.__setattr__(self, "levels", _levels(names, self.relations))

    def _bound(self, what: str, value, default: float) -> tuple[float, ...]:
        k = len(self.names)
        if value is None:
            return (float(default),) * k
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape == ():
            arr = np.full(k, float(arr))
        if arr.shape != (k,):
            raise ValueError(
                f"RewardSpec.{what} must be a scalar or have shape ({k},) to match the "
                f"components {self.names}; got shape {arr.shape}."
            )
        return tuple(float(x) for x in arr)

    # ---- basic views -------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown reward component {name!r}; known: {self.names}") from None

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @cached_property
    def level_of(self) -> np.ndarray:
        """(K,) int array: the priority level of each component (0 = highest)."""
        out = np.zeros(len(self), dtype=np.int32)
        for lvl, members in enumerate(self.levels):
            out[list(members)] = lvl
        return out

    @cached_property
    def level_mask(self) -> np.ndarray:
        """(L, K) bool array: level_mask[l, k] is True iff component k is at level l."""
        return np.arange(self.num_levels)[:, None] == self.level_of[None, :]

    @cached_property
    def sign(self) -> np.ndarray:
        """(K,) +1 for maximised components, -1 for minimised ones."""
        return np.array([1.0 if d == "max" else -1.0 for d in self.directions], np.float32)

    def oriented(self, reward: jnp.ndarray) -> jnp.ndarray:
        """The reward (last axis K) with minimised components negated."""
        return reward * jnp.asarray(self.sign)

    def check_reward(self, reward) -> None:
        """Raise a clear error when a (host-side) reward does not fit the spec."""
        shape = np.shape(reward)
        if not shape or shape[-1] != len(self):
            raise ValueError(
                f"reward of shape {shape} does not match RewardSpec with {len(self)} "
                f"components {self.names}; the last axis must have length {len(self)}."
            )

    def describe(self) -> str:
        parts = [" ~ ".join(self.names[i] for i in lvl) for lvl in self.levels]
        return " > ".join(f"[{p}]" for p in parts)


def _parse(relation: str, names: Sequence[str]) -> tuple[str, str, str]:
    m = _RELATION.match(relation)
    if m is None:
        raise PreorderError(
            f"cannot parse preorder relation {relation!r}; write 'a > b', 'a < b' or "
            "'a ~ b' with component names."
        )
    a, op, b = m.groups()
    unknown = [n for n in (a, b) if n not in names]
    if unknown:
        raise PreorderError(
            f"preorder relation {relation!r} names unknown component(s) {unknown}; "
            f"known components: {tuple(names)}."
        )
    if op == "<":
        a, op, b = b, ">", a
    return a, op, b


def _levels(names: tuple[str, ...], relations: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    k = len(names)
    parent = list(range(k))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    parsed = [_parse(r, names) for r in relations]
    for a, op, b in parsed:
        if op == "~":
            parent[find(names.index(a))] = find(names.index(b))
    # strict edges between tie classes
    edges: dict[int, set[int]] = {find(i): set() for i in range(k)}
    for a, op, b in parsed:
        if op != ">":
            continue
        ca, cb = find(names.index(a)), find(names.index(b))
        if ca == cb:
            raise PreorderError(
                f"strict cycle: '{a} > {b}' but {a} and {b} are tied through '~' relations."
            )
        edges[ca].add(cb)
    cycle = _find_cycle(edges)
    if cycle is not None:
        members = [names[c] for c in cycle]
        raise PreorderError(
            "strict cycle in the preorder: "
            + " > ".join(members + [members[0]])
            + "; remove or turn into '~' one of these relations."
        )
    # longest-path depth from the sources
    depth: dict[int, int] = {}

    def visit(c: int) -> int:
        if c not in depth:
            preds = [p for p, succ in edges.items() if c in succ]
            depth[c] = 0 if not preds else 1 + max(visit(p) for p in preds)
        return depth[c]

    for c in edges:
        visit(c)
    num = max(depth.values()) + 1
    return tuple(
        tuple(i for i in range(k) if depth[find(i)] == lvl) for lvl in range(num)
    )


def _find_cycle(edges: dict[int, set[int]]) -> list[int] | None:
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    stack: list[int] = []

    def dfs(u: int) -> list[int] | None:
        colour[u] = grey
        stack.append(u)
        for v in sorted(edges[u]):
            if colour[v] == grey:
                return stack[stack.index(v):]
            if colour[v] == white:
                found = dfs(v)
                if found is not None:
                    return found
        stack.pop()
        colour[u] = black
        return None

    for u in sorted(edges):
        if colour[u] == white:
            found = dfs(u)
            if found is not None:
                return found
    return None
