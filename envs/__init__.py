"""Environments: pure-JAX sims, CARLA, adapters. `envs.make(name)` builds one."""

from envs.registry import make

__all__ = ["make"]
