"""XLA settings that must be in place before JAX creates its CPU backend.

jax/jaxlib 0.10.2 on the CPU deadlocks on vmapped training loops (a
lax.scan'd PPO over 2 seeds sits in block_until_ready at 0% CPU forever;
single seeds run fine). Disabling the concurrency-optimised scheduler fixes
it; `--xla_cpu_multi_thread_eigen=false` does not. The flag only affects the
CPU backend, so it is harmless on accelerators. It is read when the backend is
created (the first computation), so importing mo_rl before running anything
in JAX is enough, even if `jax` itself was imported earlier.
"""

import os

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def apply() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()
