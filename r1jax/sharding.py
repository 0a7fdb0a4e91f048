"""Device meshes and logical-axis sharding rules.

The model names every parameter and activation axis logically ("batch", "embed",
"q_heads", ...; see `model.param_axes`). One table, `DEFAULT_RULES`, maps each logical
name to mesh axes of a 3-axis mesh:

  data    pure data parallelism (parameters replicated),
  fsdp    data parallelism with parameters / optimizer state sharded (ZeRO-3 style),
  tensor  Megatron-style tensor parallelism over heads, MLP width and vocabulary.

Everything takes the mesh explicitly; nothing here sets a global mesh. When a mesh axis
does not divide a dimension (2 kv heads over tensor=4), that dimension falls back to
being replicated over that axis; `plan` reports every such fallback.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1jax import model as model_lib

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Mapping[str, Any]  # logical name -> None | mesh axis | tuple of mesh axes

DEFAULT_RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "cache_length": None,
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "vocab": "tensor",
    "layers": None,
    "norm": None,
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the (data, fsdp, tensor) mesh axes; at most one may be -1 ("the rest")."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def sizes(self, n_devices: int) -> tuple[int, int, int]:
        """Concrete axis sizes for `n_devices` devices; ValueError if they do not fit."""
        sizes = [self.data, self.fsdp, self.tensor]
        for name, size in zip(MESH_AXES, sizes):
            if not isinstance(size, int) or (size < 1 and size != -1):
                raise ValueError(f"MeshConfig.{name} must be a positive int or -1, got {size!r}")
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one MeshConfig axis may be -1, got {self}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if n_devices % known:
                raise ValueError(f"MeshConfig {self}: {n_devices} devices are not divisible "
                                 f"by the fixed axes' product {known}")
            sizes[sizes.index(-1)] = n_devices // known
        elif known != n_devices:
            raise ValueError(f"MeshConfig {self} needs {known} devices, have {n_devices}")
        return tuple(sizes)


def make_mesh(mesh_cfg: MeshConfig | Mapping[str, int] | None = None,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

    `mesh_cfg` may be a MeshConfig or a mapping with the same keys (e.g. a ConfigDict).
    """
    if mesh_cfg is None:
        mesh_cfg = MeshConfig()
    elif not isinstance(mesh_cfg, MeshConfig):
        unknown = set(dict(mesh_cfg)) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; known: {MESH_AXES}")
        mesh_cfg = MeshConfig(**dict(mesh_cfg))
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_cfg.sizes(len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(sizes, MESH_AXES, axis_types=auto, devices=devices)


def _as_tuple(axes) -> tuple:
    if axes is None:
        return ()
    return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def _resolve(names: Sequence[Optional[str]], rules: Rules, shape=None, mesh=None,
             unknown=None) -> tuple[P, list[str]]:
    """PartitionSpec for logical `names`, and notes on axes dropped for divisibility.

    A mesh axis is used at most once per spec (first dimension wins, so activations
    [batch, length, embed] shard batch over fsdp and leave embed whole). With `shape`
    and `mesh`, an axis that does not divide the dimension is dropped (replicated).
    Names missing from `rules` map to `unknown` (None: replicated).
    """
    used, spec, notes = set(), [], []
    for dim, name in enumerate(names):
        if name is not None and name not in rules:
            spec.append(unknown)
            continue
        kept, prod = [], 1
        for axis in _as_tuple(rules.get(name) if name is not None else None):
            if axis in used:
                continue
            size = mesh.shape[axis] if mesh is not None else 1
            if shape is not None and shape[dim] % (prod * size):
                notes.append(f"dim {dim} ({name}={shape[dim]}) not divisible by "
                             f"{axis}={size}: replicated over {axis}")
                continue
            kept.append(axis)
            prod *= size
            used.add(axis)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*spec), notes


def logical_to_spec(names: Sequence[Optional[str]], rules: Optional[Rules] = None,
                    shape: Optional[Sequence[int]] = None, mesh: Optional[Mesh] = None) -> P:
    """PartitionSpec of an array with logical axis `names` (divisibility-checked if shape+mesh)."""
    return _resolve(names, DEFAULT_RULES if rules is None else rules, shape, mesh)[0]


def _sharding_tree(axes_tree, shapes_tree, mesh: Mesh, rules: Rules):
    return jax.tree.map(
        lambda names, s: NamedSharding(mesh, logical_to_spec(names, rules, s.shape, mesh)),
        axes_tree, shapes_tree, is_leaf=lambda x: isinstance(x, tuple))


def param_shardings(cfg: model_lib.ModelConfig, mesh: Mesh, rules: Optional[Rules] = None):
    """NamedSharding of every parameter (a pytree matching `model.init_params`)."""
    return _sharding_tree(model_lib.param_axes(cfg), model_lib.param_shapes(cfg), mesh,
                          DEFAULT_RULES if rules is None else rules)


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def opt_state_shardings(opt_state, params, param_shardings_tree):
    """Shardings for an optax state (concrete or `jax.eval_shape` of `optimizer.init`).

    Optax states hold copies of the params tree (Adam's mu / nu, ...): a leaf whose key path
    ends with a parameter's key path and has that parameter's shape gets its sharding;
    everything else (step counts, factored statistics) is replicated.
    """
    flat_p, _ = jax.tree_util.tree_flatten_with_path(params)
    flat_s = jax.tree.leaves(param_shardings_tree)
    if not flat_s:
        raise ValueError("param_shardings_tree is empty")
    mesh = flat_s[0].mesh
    by_path = {tuple(path): (leaf.shape, s) for (path, leaf), s in zip(flat_p, flat_s)}
    replicated = NamedSharding(mesh, P())

    def pick(path, leaf):
        path = tuple(path)
        for start in range(len(path)):
            hit = by_path.get(path[start:])
            if hit is not None and tuple(hit[0]) == tuple(np.shape(leaf)):
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state)


def batch_sharding(mesh: Mesh, rules: Optional[Rules] = None, ndim: int = 2,
                   shape: Optional[Sequence[int]] = None) -> NamedSharding:
    """Sharding of a batch array [B, ...]: B over the "batch" rule, the rest replicated."""
    names = ("batch",) + (None,) * (ndim - 1)
    return NamedSharding(mesh, logical_to_spec(names, rules, shape, mesh))


def make_shard_fn(mesh: Mesh, rules: Optional[Rules] = None) -> Callable:
    """The `shard(x, names)` callback of `model.forward` and friends.

    Constrains x to the rules' layout, dropping mesh axes that do not divide a dimension;
    dimensions with names the rules do not know are left unconstrained.
    """
    rules = DEFAULT_RULES if rules is None else rules

    def shard(x, names):
        if len(names) != x.ndim:
            raise ValueError(f"shard: {len(names)} logical names {names} for an array of "
                             f"shape {x.shape}")
        spec, _ = _resolve(names, rules, x.shape, mesh, unknown=P.UNCONSTRAINED)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return shard


def init_sharded(init_fn: Callable, shardings, *args):
    """`init_fn(*args)` computed directly into `shardings` (never materialised whole).

    `shardings` is a pytree matching `jax.eval_shape(init_fn, *args)`.
    """
    shapes = jax.eval_shape(init_fn, *args)
    if jax.tree.structure(shapes) != jax.tree.structure(shardings):
        raise ValueError("init_sharded: shardings do not match the structure of init_fn's "
                         f"output: {jax.tree.structure(shardings)} vs "
                         f"{jax.tree.structure(shapes)}")
    return jax.jit(init_fn, out_shardings=shardings)(*args)


def init_params_sharded(cfg: model_lib.ModelConfig, key: jax.Array, mesh: Mesh,
                        rules: Optional[Rules] = None):
    """(params, their shardings): `model.init_params` computed directly into its layout."""
    shardings = param_shardings(cfg, mesh, rules)
    return init_sharded(lambda k: model_lib.init_params(cfg, k), shardings, key), shardings


def abstract_with_shardings(shapes, shardings):
    """ShapeDtypeStructs carrying shardings: a restore target for `checkpoint.restore`."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One parameter of a sharding plan."""

    path: str
    shape: tuple
    dtype: str
    spec: P
    bytes_per_device: int
    notes: tuple


def plan(cfg: model_lib.ModelConfig, mesh, rules: Optional[Rules] = None) -> list[PlanRow]:
    """Per-parameter layout and bytes per device, without allocating.

    `mesh` needs only `.shape` (a Mesh or `jax.sharding.AbstractMesh`).
    """
    rules = DEFAULT_RULES if rules is None else rules
    shapes = model_lib.param_shapes(cfg)
    axes = jax.tree.leaves(model_lib.param_axes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    rows = []
    for (path, s), names in zip(jax.tree_util.tree_flatten_with_path(shapes)[0], axes):
        spec, notes = _resolve(names, rules, s.shape, mesh)
        local = list(s.shape)
        for dim, entry in enumerate(spec):
            local[dim] //= math.prod(mesh.shape[a] for a in _as_tuple(entry))
        rows.append(PlanRow(_path_str(path), tuple(s.shape), str(s.dtype), spec,
                            math.prod(local) * np.dtype(s.dtype).itemsize, tuple(notes)))
    return rows
