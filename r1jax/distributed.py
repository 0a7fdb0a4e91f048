"""Multi-host runs: `jax.distributed` start-up, each host's share of the data, main process.

One process per host (or per local test process). Every process runs the same program on
the global mesh; each loads only the batch rows its devices hold and builds the global
array with `global_batch`; only `is_main_process()` writes metrics.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Sharding

ENV_COORDINATOR = "R1JAX_COORDINATOR"
ENV_NUM_PROCESSES = "R1JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "R1JAX_PROCESS_ID"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
    """Starts `jax.distributed` from the arguments, else R1JAX_* environment variables.

    Returns True if it initialised a multi-process run, False for a single process (no
    coordinator, or num_processes == 1), where it does nothing. Call before any other JAX
    work. On CPU the cross-process collectives use gloo.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = _int_or_none(num_processes, ENV_NUM_PROCESSES)
    process_id = _int_or_none(process_id, ENV_PROCESS_ID)
    if not coordinator_address or num_processes in (None, 1):
        return False
    if process_id is None or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r} "
                         f"(argument or {ENV_PROCESS_ID})")
    try:  # CPU-only setting (harmless on accelerators); newer JAX may default to gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError):
        pass
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True


def _int_or_none(value, env_name: str) -> Optional[int]:
    if value is not None:
        return int(value)
    raw = os.environ.get(env_name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{env_name} must be an integer, got {raw!r}") from None


def is_main_process() -> bool:
    """True on process 0: the one that writes metrics, logs and non-array files."""
    return jax.process_index() == 0


def process_rows(global_batch: int, sharding: Optional[Sharding] = None,
                 ndim: int = 2) -> slice:
    """The rows [start, stop) of a global batch that this process must load.

    With a sharding: exactly the rows held by this process's devices. Without: an even
    split by process index (global_batch must divide by the process count).
    """
    if sharding is None:
        count, index = jax.process_count(), jax.process_index()
        if global_batch % count:
            raise ValueError(f"global batch {global_batch} not divisible by "
                             f"{count} processes")
        per = global_batch // count
        return slice(index * per, (index + 1) * per)
    shape = (global_batch,) + (1,) * (ndim - 1)
    rows = [idx[0].indices(global_batch)
            for idx in sharding.addressable_devices_indices_map(shape).values()]
    start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
    return slice(start, stop)


def global_batch(local_rows: np.ndarray, sharding: Sharding,
                 global_shape: Sequence[int]) -> jax.Array:
    """A global jax.Array from this process's rows (`process_rows(...)` of the batch).

    local_rows: [stop - start, ...] holding global rows start..stop-1.
    """
    global_shape = tuple(global_shape)
    rows = process_rows(global_shape[0], sharding, len(global_shape))
    if local_rows.shape != (rows.stop - rows.start,) + global_shape[1:]:
        raise ValueError(f"local_rows has shape {local_rows.shape}; this process holds rows "
                         f"{rows.start}..{rows.stop - 1} of {global_shape}")

    def take(index):
        first = index[0].indices(global_shape[0])
        return local_rows[(slice(first[0] - rows.start, first[1] - rows.start),) + index[1:]]

    return jax.make_array_from_callback(global_shape, sharding, take)
