"""Checkpoints of the whole training state: orbax arrays + a JSON metadata file.

Layout: <dir>/chunk_000012/{state/ (orbax StandardCheckpointer), meta.json}.
Nothing here unpickles: orbax stores arrays with tensorstore and JSON
metadata, and meta.json holds the config hash, the run identity it hashes
(agent config, env name / config / params, wrapper stack, study config,
seeds, chunking: see mo_rl.runner), chunk index, code version, the tree
layout (paths, shapes, dtypes) and a SHA-256 of the array bytes.

meta.json is written last, so a chunk directory without it is an interrupted
save. Loading checks, in order, and raises a `CheckpointError` naming the
problem instead of ever starting over silently:
  * missing/unreadable meta.json or orbax data        -> CheckpointCorruptError
  * config hash differs from the current run          -> CheckpointMismatchError
    naming every differing identity field (saved vs now)
  * tree paths / shapes / dtypes differ from the state -> CheckpointMismatchError
  * array bytes do not match the stored SHA-256       -> CheckpointCorruptError
Typed PRNG keys are stored as their raw key data and re-wrapped on load.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mo_rl.sweep import to_host

_CHUNK_DIR = re.compile(r"^chunk_(\d{6})$")
META = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says which one and why."""


class CheckpointCorruptError(CheckpointError):
    pass


class CheckpointMismatchError(CheckpointError):
    pass


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode(state: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _decode(raw: Any, like: Any) -> Any:
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
        raw,
        like,
    )


def _placeholder(x: Any) -> Any:
    """Orbax refuses zero-size arrays (e.g. a world with no walkers): store a one-element
    stand-in instead; restore puts the empty array back from the live state's shape."""
    return np.zeros((1,), x.dtype) if getattr(x, "size", 1) == 0 else x


def tree_layout(state: Any) -> list[list[Any]]:
    """[[path, shape, dtype], ...] of every leaf: what a checkpoint must match."""
    leaves = jax.tree_util.tree_flatten_with_path(_encode(state))[0]
    return [
        [jax.tree_util.keystr(p), list(np.shape(x)), str(getattr(x, "dtype", None)
                                                        or np.asarray(x).dtype)]
        for p, x in leaves
    ]


def tree_digest(state: Any) -> str:
    """SHA-256 over the bytes of every leaf (host copies, in tree order)."""
    h = hashlib.sha256()
    for x in jax.tree.leaves(to_host(_encode(state))):
        a = np.ascontiguousarray(x)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, list) and any(isinstance(x, dict) for x in tree):  # e.g. a stack
        tree = {str(i): x for i, x in enumerate(tree)}
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def identity_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'field: saved X, now Y' for every leaf of two run identities that differs."""
    a, b = _flatten(saved), _flatten(now)
    out = []
    for k in sorted(a.keys() | b.keys()):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if va != vb:
            out.append(f"{k}: saved {va!r}, now {vb!r}")
    return out


def added_at_default(saved: dict[str, Any], now: dict[str, Any],
                     defaults: dict[str, Any]) -> list[str] | None:
    """The fields a newer code version added to the run identity, if those are the ONLY
    differences and each holds its declared default (`defaults`: the identity's fields at
    their default, nested like it): a checkpoint written before they existed trained with
    that behaviour, so it may resume. None when anything else differs."""
    a, b, d = _flatten(saved), _flatten(now), _flatten(defaults)
    differ = [k for k in sorted(a.keys() | b.keys())
              if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if all(k not in a and k in d and d[k] == b[k] for k in differ):
        return differ
    return None


def _layout_diff(saved: list, current: list) -> str:
    s = {tuple(e[0:1]): e for e in saved}
    c = {tuple(e[0:1]): e for e in current}
    missing = sorted(k[0] for k in c.keys() - s.keys())
    extra = sorted(k[0] for k in s.keys() - c.keys())
    changed = [f"{k[0]}: saved {s[k][1]} {s[k][2]} vs now {c[k][1]} {c[k][2]}"
               for k in sorted(s.keys() & c.keys()) if s[k] != c[k]]
    parts = []
    if missing:
        parts.append(f"leaves missing from checkpoint: {missing[:5]}")
    if extra:
        parts.append(f"leaves only in checkpoint: {extra[:5]}")
    if changed:
        parts.append("shape/dtype changed: " + "; ".join(changed[:5]))
    return ", ".join(parts) or "leaf order differs"


class Checkpointer:
    """Save/restore chunked training state under one run directory."""

    def __init__(self, directory: str | Path, config_hash: str, *, max_to_keep: int = 2,
                 code_version: dict[str, Any] | None = None,
                 identity: dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None):
        self.directory = Path(directory).absolute()
        self.config_hash = config_hash
        self.max_to_keep = max_to_keep
        self.code_version = code_version or {}
        self.identity = identity  # JSON-ready dict that config_hash was computed from
        # identity fields at their declared default (nested like identity): a checkpoint
        # written before such a field existed still resumes (added_at_default)
        self.defaults = defaults or {}

    def _dir(self, chunk: int) -> Path:
        return self.directory / f"chunk_{chunk:06d}"

    def chunks(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir()
                      if (m := _CHUNK_DIR.match(p.name)) and p.is_dir())

    def latest(self) -> int | None:
        """Highest saved chunk index, or None when there is no checkpoint at all."""
        chunks = self.chunks()
        return chunks[-1] if chunks else None

    def save(self, chunk: int, state: Any, extra: dict[str, Any] | None = None) -> Path:
        import orbax.checkpoint as ocp

        d = self._dir(chunk)
        if jax.process_index() == 0:
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        enc = _encode(state)
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(d / "state", jax.tree.map(_placeholder, enc))
        ckpt.wait_until_finished()
        ckpt.close()
        meta = {
            "config_hash": self.config_hash,
            "identity": self.identity,
            "chunk": chunk,
            "code_version": self.code_version,
            "layout": tree_layout(state),
            "sha256": tree_digest(state),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "extra": extra or {},
        }
        if jax.process_index() == 0:  # one writer on a shared file system
            tmp = d / (META + ".tmp")
            tmp.write_text(json.dumps(meta, indent=1))
            tmp.rename(d / META)  # atomic: the checkpoint exists only once this is there
            for old in self.chunks()[: -self.max_to_keep] if self.max_to_keep > 0 else []:
                shutil.rmtree(self._dir(old), ignore_errors=True)
        return d

    def read_meta(self, chunk: int) -> dict[str, Any]:
        p = self._dir(chunk) / META
        if not p.is_file():
            raise CheckpointCorruptError(
                f"checkpoint {self._dir(chunk)} is incomplete (no {META}; the save was "
                f"interrupted). Delete that directory to resume from the previous one."
            )
        try:
            meta = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointCorruptError(f"checkpoint metadata {p} is not valid JSON: {e}") from e
        for key in ("config_hash", "chunk", "layout", "sha256"):
            if key not in meta:
                raise CheckpointCorruptError(f"checkpoint metadata {p} lacks '{key}'")
        return meta

    def restore(self, chunk: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restore chunk `chunk` into the structure/shardings of `like` (a live state)."""
        import orbax.checkpoint as ocp

        d = self._dir(chunk)
        meta = self.read_meta(chunk)
        saved = meta.get("identity")
        added = None
        if meta["config_hash"] != self.config_hash and saved is not None and self.identity:
            added = added_at_default(saved, self.identity, self.defaults)
            if added and jax.process_index() == 0:
                print(f"[checkpoint] {d} was written before these fields existed; resuming "
                      f"with their defaults, which is how it trained: {', '.join(added)}")
        if meta["config_hash"] != self.config_hash and not added:
            if saved is not None and self.identity is not None:
                diff = identity_diff(saved, self.identity)
                what = ("the run identity differs in: " + "; ".join(diff[:12])
                        + (f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""))
            else:
                what = ("config, env, seeds or chunking changed (the checkpoint records no "
                        "identity fields to compare)")
            raise CheckpointMismatchError(
                f"refusing to resume from checkpoint {d}: it was written by a run with config "
                f"hash {meta['config_hash']}, but this run's config hash is "
                f"{self.config_hash}; {what}. Use a new run name, or the original settings."
            )
        layout = tree_layout(like)
        if meta["layout"] != layout:
            raise CheckpointMismatchError(
                f"checkpoint {d} does not fit the training state: "
                f"{_layout_diff(meta['layout'], layout)}"
            )
        enc_like = _encode(like)
        target = jax.tree.map(
            lambda x: _placeholder(x) if x.size == 0 else jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            enc_like,
        )
        ckpt = ocp.StandardCheckpointer()
        try:
            raw = ckpt.restore(d / "state", target)
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            raise CheckpointCorruptError(f"checkpoint {d} could not be read: {e}") from e
        finally:
            ckpt.close()
        raw = jax.tree.map(lambda r, x: x if x.size == 0 else r, raw, enc_like)
        state = _decode(raw, like)
        digest = tree_digest(state)
        if digest != meta["sha256"]:
            raise CheckpointCorruptError(
                f"checkpoint {d} is corrupt: array data SHA-256 {digest[:12]}... differs "
                f"from the stored {meta['sha256'][:12]}..."
            )
        return state, meta
