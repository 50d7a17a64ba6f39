"""Typed, frozen experiment configs: validation, JSON round trip, hashing, presets, CLI.

A study defines frozen dataclasses (its own `StudyConfig` holding an agent
config, the seeds and whatever else it needs) and a dict of named presets.
Validation lives in each dataclass's `__post_init__`, written with the
helpers below so every error names the offending field:

    @dataclass(frozen=True)
    class PPOConfig:
        lr: float = 3e-4
        def __post_init__(self):
            check_positive(self, "lr")

`cli(StudyConfig, presets)` parses `--preset NAME` first and then lets tyro
override any field starting from that preset, e.g.

    python -m experiments.demo --preset quick --seeds 8 --agent.lr 3e-4

Configs are stored as JSON and rebuilt field by field from the dataclass
type hints (`from_dict`), so loading a config never evaluates code.

`cli` also takes two run-safety flags that are not config fields (they
change what the runner tolerates, never what it computes, so they are not
part of a run's identity): `--allow-nonfinite` (train on and tabulate a run
whose updates turned NaN / inf) and `--allow-dirty` (write results under the
repository from a tree with uncommitted changes; the patch is stored). They
are kept in `run_flags()`, which mo_rl.runner reads as its defaults, together
with the command line itself for the results' provenance.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the field's name."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# ---- validation helpers (call from __post_init__) ---------------------------------


def _value(cfg: Any, name: str) -> Any:
    return getattr(cfg, name)


def _where(cfg: Any, name: str) -> str:
    return f"{type(cfg).__name__}.{name}"


def check(cfg: Any, name: str, ok: bool, message: str) -> None:
    """Raise ConfigError for `cfg.name` unless `ok`."""
    if not ok:
        raise ConfigError(_where(cfg, name), f"{message} (got {_value(cfg, name)!r})")


def check_positive(cfg: Any, *names: str) -> None:
    for n in names:
        check(cfg, n, _value(cfg, n) > 0, "must be > 0")


def check_non_negative(cfg: Any, *names: str) -> None:
    for n in names:
        check(cfg, n, _value(cfg, n) >= 0, "must be >= 0")


def check_range(cfg: Any, name: str, low: float, high: float, *, closed: bool = True) -> None:
    v = _value(cfg, name)
    ok = low <= v <= high if closed else low < v < high
    brackets = "[{}, {}]" if closed else "({}, {})"
    check(cfg, name, ok, "must lie in " + brackets.format(low, high))


def check_choice(cfg: Any, name: str, choices: Sequence[Any]) -> None:
    check(cfg, name, _value(cfg, name) in tuple(choices), f"must be one of {tuple(choices)}")


def check_divides(cfg: Any, name: str, divisor_name: str) -> None:
    """`cfg.name` must be a multiple of `cfg.divisor_name`."""
    v, d = _value(cfg, name), _value(cfg, divisor_name)
    check(cfg, name, d > 0 and v % d == 0, f"must be a multiple of {divisor_name}={d}")


# ---- JSON round trip -------------------------------------------------------------


def to_dict(cfg: Any) -> Any:
    """A JSON-ready view of a (nested) config: dataclasses -> dicts, tuples -> lists."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if hasattr(cfg, "item") and getattr(cfg, "shape", None) == ():  # numpy / jax scalar
        return cfg.item()
    return cfg


def default_fields(cfg: Any) -> dict[str, Any]:
    """{field: value as in to_dict} of a dataclass config's fields that hold their declared
    default (what a run identity may lack when it was saved before the field existed)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        value = to_dict(getattr(cfg, f.name))
        if value == to_dict(default):
            out[f.name] = value
    return out


def to_json(cfg: Any, **kw: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, **kw)


def config_hash(cfg: Any, extra: Any = None) -> str:
    """Stable 16-hex-digit hash of the config (and anything else that fixes the run)."""
    payload = json.dumps({"config": to_dict(cfg), "extra": to_dict(extra)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _build(tp: Any, value: Any, where: str) -> Any:
    """Rebuild `value` (parsed JSON) as type `tp`; plain data only, nothing evaluated."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected an object for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _build(a, value, where)
            except (ConfigError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigError(where, f"{value!r} fits none of {args}: {errors}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(where, f"must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(where, f"expected {len(args)} entries, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_build(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin in (list, Sequence):
        (a,) = typing.get_args(tp) or (Any,)
        return [_build(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        _, a = typing.get_args(tp) or (str, Any)
        return {k: _build(a, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, f"expected float, got {value!r}")
    if tp in (int, str, bool) and type(value) is not tp:
        raise ConfigError(where, f"expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, _where: str | None = None) -> T:
    """Rebuild a (nested) frozen config from `to_dict` output; unknown keys are errors."""
    where = _where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(where, f"unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(to_json(cfg, indent=2) + "\n")


def load_config(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def replace(cfg: T, **overrides: Any) -> T:
    """dataclasses.replace with dotted names for nested fields: replace(c, **{"agent.lr": 1e-3})."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for k, v in overrides.items():
        head, _, rest = k.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)


# ---- presets and CLI -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """Process-wide run options set by `cli` (defaults: strict)."""

    allow_nonfinite: bool = False
    allow_dirty: bool = False
    command: str | None = None  # the study command line, for results' provenance


_RUN_FLAGS = RunFlags()


def run_flags() -> RunFlags:
    """The flags of the study CLI that started this process (strict defaults otherwise)."""
    return _RUN_FLAGS


def set_run_flags(flags: RunFlags) -> None:
    global _RUN_FLAGS
    _RUN_FLAGS = flags


def invocation(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command line as one would retype it: `python -m <module> args` (module:
    default that of `__main__`, i.e. the one run with `python -m`)."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = module or (spec.name if spec is not None else None)
    head = (["python", "-m", module] if module
            else ["python", Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "-c"])
    return shlex.join(head + args)


def cli(
    cls: type[T],
    presets: Mapping[str, T],
    *,
    default_preset: str | None = None,
    args: Sequence[str] | None = None,
    description: str | None = None,
) -> T:
    """Parse `--preset NAME` then override any field with tyro, starting from that preset.

    `--preset` defaults to `default_preset` (or the first preset). Invalid values
    are reported by tyro with the ConfigError message naming the field.
    `--allow-nonfinite` / `--allow-dirty` are taken out here and stored in
    `run_flags()` (see the module doc), with the full command line.
    """
    import tyro  # CLI-only dependency: keep `import mo_rl.config` light

    argv = list(sys.argv[1:] if args is None else args)
    names = list(presets)
    if not names:
        raise ValueError("cli() needs at least one preset")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=names, default=default_preset or names[0])
    pre.add_argument("--allow-nonfinite", action="store_true")
    pre.add_argument("--allow-dirty", action="store_true")
    known, rest = pre.parse_known_args(argv)
    doc = (description or cls.__doc__ or "").strip()
    doc += (f"\n\nPresets: {', '.join(names)} (chosen with --preset; current: {known.preset})."
            "\n--allow-nonfinite: train on and tabulate a run whose updates turn NaN/inf "
            "(default: stop at the first such chunk).\n--allow-dirty: write results under the "
            "repository from a tree with uncommitted changes (the patch is stored).")
    cfg = tyro.cli(cls, default=presets[known.preset], args=rest, description=doc)
    set_run_flags(RunFlags(allow_nonfinite=known.allow_nonfinite,
                           allow_dirty=known.allow_dirty,
                           command=invocation(argv, None if cls.__module__ == "__main__"
                                              else cls.__module__)))
    return cfg
