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
# JAX's own variables (jax.distributed reads the first; the two others are the usual companions).
JAX_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
JAX_NUM_PROCESSES = "JAX_NUM_PROCESSES"
JAX_PROCESS_ID = "JAX_PROCESS_ID"


def detected_cluster() -> Optional[str]:
    """The cluster this process runs in, as JAX's own detection sees it: JAX_COORDINATOR_ADDRESS
    when set, else the first cluster environment that `jax.distributed.initialize()` would
    auto-detect (Cloud TPU pod, SLURM, Open MPI, Kubernetes); None on a single machine."""
    if os.environ.get(JAX_COORDINATOR):
        return JAX_COORDINATOR
    try:  # JAX's registry of cluster environments (the list `initialize()` walks itself)
        from jax._src import clusters
        envs = clusters.ClusterEnv._cluster_types
    except (ImportError, AttributeError):
        return None
    for env in envs:
        if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
            return env.__name__
    return None


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
    """Starts `jax.distributed` when this process is one of several; call before other JAX work.

    In order: the arguments, else the R1JAX_* variables (coordinator, process count, id); else
    JAX's conventions: `jax.distributed.initialize()` whenever `detected_cluster()` finds a
    cluster (TPU pods, SLURM, Open MPI, Kubernetes, or JAX_COORDINATOR_ADDRESS with
    JAX_NUM_PROCESSES and JAX_PROCESS_ID). Returns True if it initialised a multi-process run,
    False for a single process, where it does nothing. On CPU collectives use gloo.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = _int_or_none(num_processes, ENV_NUM_PROCESSES)
    process_id = _int_or_none(process_id, ENV_PROCESS_ID)
    kwargs = {}
    if coordinator_address:
        if num_processes in (None, 1):
            return False
        if process_id is None or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r} "
                             f"(argument or {ENV_PROCESS_ID})")
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    elif detected_cluster() is None:
        return False
    else:  # JAX's conventions: its cluster detection fills in what is not given
        kwargs = {k: v for k, v in (("num_processes", _int_or_none(None, JAX_NUM_PROCESSES)),
                                    ("process_id", _int_or_none(None, JAX_PROCESS_ID)))
                  if v is not None}
    try:  # CPU-only setting (harmless on accelerators); newer JAX may default to gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError):
        pass
    jax.distributed.initialize(**kwargs)
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
