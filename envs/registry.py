"""`make(name, **kwargs) -> (env, params)` for every registered env.

A factory is any callable `(**kwargs) -> (env, params)`. Built-ins are
registered here; other modules add theirs with `register(name, factory)`
(lazily imported modules can register a "module:function" string instead of a
callable so that importing `envs` stays light). Names starting with "gym:"
go through the Gymnasium/MO-Gymnasium adapter: make("gym:mo-mountaincar-v0").
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

Factory = Callable[..., tuple[Any, Any]]

_REGISTRY: dict[str, Factory | str] = {}


def register(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Register `factory` (callable or "package.module:function") under `name`."""
    if name in _REGISTRY and not overwrite and _REGISTRY[name] != factory:
        raise ValueError(
            f"env name {name!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(factory: Factory | str) -> Factory:
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def make(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build env `name`. Keyword arguments go to the factory (see `from_class`:
    constructor arguments and/or fields of the env's params)."""
    if name.startswith("gym:"):
        from envs.adapters.gymnasium_in import make_gymnasium

        return make_gymnasium(name[len("gym:") :], **kwargs)
    if name.startswith("carla:"):  # a live server, "carla:<host>:<port>" (not in names())
        from envs.carla.protocol import make_carla

        host, _, port = name[len("carla:") :].partition(":")
        return make_carla(host or "localhost", port or 2000, **kwargs)
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown env {name!r}; known envs: {', '.join(names())} "
            "(or 'gym:<gymnasium id>' for a Gymnasium/MO-Gymnasium env)."
        )
    return _resolve(_REGISTRY[name])(**kwargs)


def from_class(cls_path: str) -> Factory:
    """A factory for an Env class: kwargs naming fields of its default params
    replace those fields; the other kwargs go to the constructor."""

    def factory(**kwargs: Any) -> tuple[Any, Any]:
        cls = _resolve(cls_path)
        probe = cls()
        fields = {f.name for f in dataclasses.fields(probe.default_params)}
        param_kw = {k: v for k, v in kwargs.items() if k in fields}
        ctor_kw = {k: v for k, v in kwargs.items() if k not in fields}
        try:
            env = cls(**ctor_kw) if ctor_kw else probe
        except TypeError as e:
            raise TypeError(
                f"{cls.__name__}: bad keyword argument(s) {sorted(ctor_kw)} ({e}); params "
                f"fields are {sorted(fields)}."
            ) from None
        return env, env.default_params.replace(**param_kw)

    return factory


for _name, _path in {
    "CartPole-v1": "envs.classic:CartPole",
    "Pendulum-v1": "envs.classic:Pendulum",
    "FactoredPendulum-v1": "envs.classic:FactoredPendulum",
    "Chain": "envs.toy:Chain",
    "PreorderedShortcut": "envs.toy:PreorderedShortcut",
    "TailBandit": "envs.toy:TailBandit",
}.items():
    register(_name, from_class(_path))
register("Driving", "envs.driving:make_driving")  # make("Driving", preset="quick", reward=...)


def _coopetition(game: str) -> Factory:
    """Lazy factory: importing envs does not import the coopetition games."""

    def factory(**kwargs: Any) -> tuple[Any, Any]:
        return importlib.import_module("envs.coopetition.games").make_game(game, **kwargs)

    return factory


# make("PublicGoods-v0", reward_mode="cooperative"); a test checks every game of
# envs.coopetition.games.GAMES is listed here
for _game in ("TrustDilemma", "PartnerHoldUp", "RenaultNissan", "SLCD", "PlatformEcosystem",
              "TeamProduction", "LoyaltyTeam", "PublicGoods", "ApacheProject",
              "ReciprocalDilemma", "GiftExchange", "IndirectReciprocity", "GraduatedSanction",
              "AppleAppStore"):
    register(f"{_game}-v0", _coopetition(f"{_game}-v0"))
