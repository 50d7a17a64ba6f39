"""Adapters between the mo_rl env protocol and Gymnasium / MO-Gymnasium / PettingZoo.

gymnasium_in:  any (MO-)Gymnasium env -> protocol env (ordered io_callback).
pettingzoo_in: any PettingZoo ParallelEnv / AECEnv -> multi-agent protocol env.
gymnasium_out: any protocol env -> gymnasium.Env (passes check_env).
Host envs (the *_in adapters) are batched on the host by mo_rl.batching.batched.
Import the submodules directly; this package imports nothing heavy.
"""
