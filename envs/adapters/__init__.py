"""Adapters between the mo_rl env protocol and Gymnasium / MO-Gymnasium.

gymnasium_in:  any (MO-)Gymnasium env -> protocol env (ordered io_callback).
gymnasium_out: any protocol env -> gymnasium.Env (passes check_env).
Import the submodules directly; this package imports nothing heavy.
"""
