"""Orbax checkpoints of a training run: params, optimizer state, step, PRNG key, extras.

Each step is a folder `<dir>/<step>/` with two items:
  state  the arrays {"params", "opt_state", "key"} (the key as `jax.random.key_data`),
         written by Orbax (tensorstore / OCDBT), each process writing its own shards;
  meta   JSON: the caller's `extra` dict (data iterator position, metrics, ...), the
         PRNG implementation name and optionally the model config.
Orbax writes a step to a temporary folder and renames it when complete, so a crash or a
failed save never touches the steps already saved; retention (the last N plus the best by
a metric) only runs after a save has finished.

`restore(target=...)` lays arrays out by the target's shardings, so a run saved on one mesh
resumes on another. With `step=None` it walks back from the newest step past any that fail
to read, with a warning.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

_PARTS = ("params", "opt_state", "key")
_ITEMS = _PARTS + ("meta",)


@dataclasses.dataclass
class Restored:
    """What `CheckpointManager.restore` returns; absent parts are None."""

    step: int
    params: Any
    opt_state: Any
    key: Optional[jax.Array]
    extra: dict
    model_config: Optional[dict]


class CheckpointManager:
    """Save / restore / resume a run in `directory` (created if missing).

    Args:
      max_to_keep: keep the newest N steps (None: keep all).
      best_metric: with it, also keep the `keep_best` steps best by metrics[best_metric]
        (`metrics` passed to `save`); best_mode "max" or "min".
      save_interval_steps: `save` skips steps not divisible by it (unless force=True).
      async_save: write in a background thread; `wait()` blocks until written.
    """

    def __init__(self, directory, *, max_to_keep: Optional[int] = 3,
                 best_metric: Optional[str] = None, best_mode: str = "max",
                 keep_best: int = 1, save_interval_steps: int = 1, async_save: bool = True):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()
        self.best_metric = best_metric
        policies = [ocm.LatestN(n=max_to_keep)]
        best_fn = None
        if best_metric is not None:
            worst = float("-inf") if best_mode == "max" else float("inf")

            def best_fn(metrics):  # steps saved without the metric rank last
                return float(metrics.get(best_metric, worst))

            policies.append(ocm.BestN(get_metric_fn=best_fn, reverse=best_mode == "min",
                                      n=keep_best))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            best_fn=best_fn, best_mode=best_mode,
            enable_async_checkpointing=async_save, create=True)
        # Naming the handlers lets a fresh manager read metadata of steps saved earlier.
        handlers = {name: ocp.StandardCheckpointHandler() for name in _PARTS}
        handlers["meta"] = ocp.JsonCheckpointHandler()
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=handlers)

    # ------------------------------------------------------------------------- saving

    def save(self, step: int, *, params: Any, opt_state: Any = None,
             key: Optional[jax.Array] = None, extra: Optional[Mapping] = None,
             metrics: Optional[Mapping[str, float]] = None,
             model_config: Optional[Any] = None, force: bool = False) -> bool:
        """Starts saving `step` (asynchronously by default); True if a save was started.

        extra: JSON-serialisable dict (data position, metrics, ...), restored as is.
        metrics: scalars for best-by-metric retention (must hold best_metric if set).
        model_config: a ModelConfig (or dict) stored for exporters.
        """
        if self.best_metric is not None and (metrics is None or self.best_metric not in metrics):
            raise ValueError(f"save(step={step}): metrics must contain {self.best_metric!r}")
        meta = {"extra": dict(extra or {}), "rng_impl": None,
                "model_config": _config_dict(model_config),
                "parts": [n for n, v in (("params", params), ("opt_state", opt_state),
                                         ("key", key)) if v is not None]}
        try:
            json.dumps(meta)
        except TypeError as e:
            raise ValueError(f"save(step={step}): extra is not JSON-serialisable: {e}") from None
        state = {"params": params}
        if opt_state is not None:
            state["opt_state"] = opt_state
        if key is not None:
            if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
                meta["rng_impl"] = str(jax.random.key_impl(key))
                key = jax.random.key_data(key)
            state["key"] = {"data": key}  # Orbax saves trees, not bare arrays
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        items = {name: ocp.args.StandardSave(tree) for name, tree in state.items()}
        return self._manager.save(int(step), args=ocp.args.Composite(
            meta=ocp.args.JsonSave(meta), **items), metrics=metrics, force=force)

    def wait(self) -> None:
        """Blocks until every started save is on disk (re-raises a failed async save)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------- queries

    def all_steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> Optional[int]:
        """The best kept step by best_metric (None without a metric or steps)."""
        return self._manager.best_step() if self.best_metric is not None else None

    def read_meta(self, step: Optional[int] = None) -> dict:
        """The JSON part of `step` (default newest): extra, model_config, parts, rng_impl."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint steps in {self.directory}")
        return self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    # ------------------------------------------------------------------------- restoring

    def restore(self, step: Optional[int] = None, target: Optional[Mapping] = None
                ) -> Restored:
        """Restores `step`, or the newest readable step when None.

        target: optional {"params": ..., "opt_state": ...} of arrays or
          `jax.ShapeDtypeStruct`s with shardings (see `sharding.abstract_with_shardings`):
          arrays come back with those shardings and tree types (e.g. optax namedtuples),
          on any mesh. Without a target they come back as saved, on the default layout,
          with containers as dicts / lists. Parts the target omits are not read.
        Raises ValueError naming the key when the target's structure or shapes differ from
        the checkpoint's, and FileNotFoundError when there is no readable step.
        """
        if step is not None:
            return self._restore(int(step), target)
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint steps in {self.directory}")
        for i, candidate in enumerate(reversed(steps)):
            try:
                return self._restore(candidate, target)
            except _StructureError:
                raise
            except Exception as e:  # noqa: BLE001 -- any read failure means a bad step
                older = steps[-i - 2] if i + 1 < len(steps) else None
                warnings.warn(f"checkpoint step {candidate} in {self.directory} is unreadable "
                              f"({type(e).__name__}: {str(e)[:300]}); "
                              + (f"trying step {older}" if older is not None else
                                 "no older step left"), RuntimeWarning, stacklevel=2)
        raise FileNotFoundError(f"no readable checkpoint step in {self.directory} "
                                f"(tried {sorted(steps, reverse=True)})")

    def _restore(self, step: int, target: Optional[Mapping]) -> Restored:
        meta = self.read_meta(step)
        parts = meta.get("parts", list(_PARTS))
        if target is None:
            args = {name: ocp.args.StandardRestore() for name in parts}
        else:
            saved = self._saved_leaves(step, parts)
            abstract = _abstract_target(dict(target), saved, step)
            _check_structure(step, saved, abstract)
            # Parts the target leaves out (e.g. opt_state for an export) are not read.
            args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
        state = self._manager.restore(step, args=ocp.args.Composite(**args))
        key = state["key"]["data"] if "key" in args else None
        if key is not None and meta.get("rng_impl"):
            key = jax.random.wrap_key_data(key, impl=meta["rng_impl"])
        return Restored(step=step, params=state["params"],
                        opt_state=state.get("opt_state") if "opt_state" in args else None,
                        key=key, extra=meta["extra"], model_config=meta.get("model_config"))

    def _saved_leaves(self, step: int, parts) -> dict:
        """{"params/layers/q": ArrayMetadata, ..., "key/data": ...} of the saved parts."""
        metadata = self._manager.item_metadata(step)
        flat = {}
        for name in parts:
            tree = getattr(metadata[name], "tree", metadata[name])
            flat.update({f"{name}/{k}": v for k, v in
                         ocp.tree.to_flat_dict(tree, sep="/").items() if v is not None})
        return flat


class _StructureError(ValueError):
    """The target does not match the checkpoint (never a reason to fall back)."""


def _check_structure(step: int, saved: dict, abstract: dict) -> None:
    wanted = ocp.tree.to_flat_dict(abstract, sep="/")
    for name in sorted(wanted):
        if name not in saved:
            raise _StructureError(f"checkpoint step {step} has no key {name!r} that the "
                                  "restore target has")
    for name in sorted(saved):
        if name.split("/")[0] in abstract and name not in wanted:
            raise _StructureError(f"checkpoint step {step} has key {name!r} that the "
                                  "restore target lacks")
    for name, want in wanted.items():
        if tuple(saved[name].shape) != tuple(want.shape):
            raise _StructureError(f"checkpoint step {step}: key {name!r} has shape "
                                  f"{tuple(saved[name].shape)}, target {tuple(want.shape)}")


def _abstract_target(target: dict, saved: dict, step: int) -> dict:
    """ShapeDtypeStructs for the restore; the key (if saved) replicated on the params' mesh."""
    unknown = set(target) - {"params", "opt_state", "key"}
    if unknown:
        raise ValueError(f"restore target has unknown parts {sorted(unknown)}; "
                         "expected params, opt_state, key")
    abstract = {name: jax.tree.map(_abstract_leaf, target[name])
                for name in ("params", "opt_state") if target.get(name) is not None}
    if "key/data" in saved:
        leaves = jax.tree.leaves(abstract.get("params"))
        sharding = getattr(leaves[0], "sharding", None) if leaves else None
        if isinstance(sharding, jax.sharding.NamedSharding):
            sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        else:
            sharding = None
        data = saved["key/data"]
        abstract["key"] = {"data": jax.ShapeDtypeStruct(tuple(data.shape), data.dtype,
                                                        sharding=sharding)}
    return abstract


def _abstract_leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _config_dict(cfg) -> Optional[dict]:
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    return json.loads(json.dumps(dict(cfg)))


def model_config_from_dict(d: Mapping):
    """The ModelConfig stored by `save(model_config=...)` (tuples restored from JSON lists)."""
    from r1jax.model import ModelConfig
    d = dict(d)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = tuple(d["rope_scaling"])
    return ModelConfig(**d)
