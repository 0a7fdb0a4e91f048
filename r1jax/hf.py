"""Hugging Face interop: Qwen2/Qwen2.5 and Llama-3.x folders <-> r1jax params.

A folder holds `config.json` and safetensors weights, either one `model.safetensors` or shards
listed in `model.safetensors.index.json`. Weights are read through safetensors' numpy API
(bfloat16 through ml_dtypes), never pickle, and nothing touches the network.

Layout (HF `nn.Linear` weights are [out, in]; ours are [in, out] with heads split out):

  model.embed_tokens.weight                     [V, D]      embed       [V, D]
  model.layers.{i}.input_layernorm.weight       [D]         attn_norm   [L, D]
  model.layers.{i}.self_attn.q_proj.weight      [N*H, D]    q           [L, D, N, H]
  model.layers.{i}.self_attn.k_proj.weight      [K*H, D]    k           [L, D, K, H]
  model.layers.{i}.self_attn.v_proj.weight      [K*H, D]    v           [L, D, K, H]
  model.layers.{i}.self_attn.{q,k,v}_proj.bias  [N*H|K*H]   *_bias      [L, N|K, H]
  model.layers.{i}.self_attn.o_proj.weight      [D, N*H]    o           [L, N, H, D]
  model.layers.{i}.post_attention_layernorm.weight [D]      mlp_norm    [L, D]
  model.layers.{i}.mlp.gate_proj.weight         [F, D]      gate        [L, D, F]
  model.layers.{i}.mlp.up_proj.weight           [F, D]      up          [L, D, F]
  model.layers.{i}.mlp.down_proj.weight         [D, F]      down        [L, F, D]
  model.norm.weight                             [D]         final_norm  [D]
  lm_head.weight                                [V, D]      lm_head     [D, V] (untied only)

Strictness: a missing tensor, a wrong shape and an unexpected extra tensor all raise a
ValueError naming the tensor (an ignored tensor would silently change the model). The only
tensors tolerated and skipped are `lm_head.weight` when embeddings are tied (transformers
ignores it too) and rotary `inv_freq` buffers. Llama with `attention_bias=True` also has an
`o_proj.bias`, which r1jax has no slot for: it loads only when that bias is all zeros.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from r1jax.model import ModelConfig, Params, param_shapes

PathLike = Union[str, os.PathLike]

ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


# ----------------------------------------------------------------------------- configs

def _architecture(hf: dict) -> str:
    archs = hf.get("architectures") or []
    if archs:
        if archs[0] not in ARCHITECTURES:
            raise ValueError(f"config.json: unsupported architecture {archs[0]!r}; "
                             f"supported: {sorted(ARCHITECTURES)}")
        return archs[0]
    by_type = {t: a for a, t in ARCHITECTURES.items()}
    if hf.get("model_type") not in by_type:
        raise ValueError(f"config.json: unsupported model_type {hf.get('model_type')!r}; "
                         f"supported: {sorted(by_type)}")
    return by_type[hf["model_type"]]


def _rope(hf: dict) -> tuple[float, Optional[tuple[float, float, float, int]]]:
    """(rope_theta, rope_scaling) from old-style (`rope_theta`, `rope_scaling`) or
    transformers>=5 (`rope_parameters`) keys."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(f"config.json: unsupported rope_scaling type {kind!r} "
                         "(supported: default, llama3)")
    try:
        return theta, (float(scaling["factor"]), float(scaling["low_freq_factor"]),
                       float(scaling["high_freq_factor"]),
                       int(scaling["original_max_position_embeddings"]))
    except KeyError as e:
        raise ValueError(f"config.json: llama3 rope_scaling lacks {e.args[0]!r}") from None


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from a Qwen2 / Llama `config.json` dict.

    param_dtype and compute_dtype come from `torch_dtype` / `dtype` when it is float32,
    bfloat16 or float16, else float32. Unsupported variants (sliding-window attention, MLP
    biases, activations other than SiLU, rope types other than default/llama3) fail.
    """
    arch = _architecture(hf)
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act must be 'silu', got {hf['hidden_act']!r}")
    if hf.get("mlp_bias"):
        raise ValueError("config.json: mlp_bias=True is not supported")
    if hf.get("use_sliding_window"):
        raise ValueError("config.json: use_sliding_window=True is not supported")
    try:
        heads = hf["num_attention_heads"]
        theta, scaling = _rope(hf)
        dtype = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
        return ModelConfig(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"], n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            d_ff=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
            qkv_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias")),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            max_seq_len=hf.get("max_position_embeddings", 2048),
            param_dtype=dtype if dtype in _ST_DTYPES.values() else "float32",
            compute_dtype=dtype if dtype in _ST_DTYPES.values() else "float32")
    except KeyError as e:
        raise ValueError(f"config.json: missing field {e.args[0]!r}") from None


def config_to_hf(cfg: ModelConfig, architecture: Optional[str] = None) -> dict:
    """`config.json` dict for cfg: Qwen2 when cfg.qkv_bias else Llama, unless `architecture`
    ("Qwen2ForCausalLM" / "LlamaForCausalLM") says otherwise. Old-style rope keys
    (`rope_theta`, `rope_scaling`) are written; transformers 4 and 5 both read them."""
    arch = architecture or ("Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {arch!r}; supported: {sorted(ARCHITECTURES)}")
    scaling = None
    if cfg.rope_scaling is not None:
        factor, low, high, old_len = cfg.rope_scaling
        scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                   "high_freq_factor": high, "original_max_position_embeddings": old_len}
    hf = {
        "architectures": [arch], "model_type": ARCHITECTURES[arch],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_scaling": scaling,
        "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": cfg.param_dtype,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
    }
    if arch == "LlamaForCausalLM":
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=False, pretraining_tp=1)
    else:
        hf.update(use_sliding_window=False, sliding_window=None,
                  max_window_layers=cfg.n_layers)
    return hf


# ----------------------------------------------------------------------------- name tables

def _layer_table(cfg: ModelConfig, arch: str) -> list[tuple[str, str, tuple, tuple]]:
    """(our name, HF suffix, HF shape, our per-layer shape) for every per-layer tensor.
    Matrices map by transpose + reshape; vectors by reshape."""
    D, N, K, H, F = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    table = [
        ("attn_norm", "input_layernorm.weight", (D,), (D,)),
        ("q", "self_attn.q_proj.weight", (N * H, D), (D, N, H)),
        ("k", "self_attn.k_proj.weight", (K * H, D), (D, K, H)),
        ("v", "self_attn.v_proj.weight", (K * H, D), (D, K, H)),
        ("o", "self_attn.o_proj.weight", (D, N * H), (N, H, D)),
        ("mlp_norm", "post_attention_layernorm.weight", (D,), (D,)),
        ("gate", "mlp.gate_proj.weight", (F, D), (D, F)),
        ("up", "mlp.up_proj.weight", (F, D), (D, F)),
        ("down", "mlp.down_proj.weight", (D, F), (F, D)),
    ]
    if cfg.qkv_bias or arch == "Qwen2ForCausalLM":
        table += [("q_bias", "self_attn.q_proj.bias", (N * H,), (N, H)),
                  ("k_bias", "self_attn.k_proj.bias", (K * H,), (K, H)),
                  ("v_bias", "self_attn.v_proj.bias", (K * H,), (K, H))]
    if cfg.qkv_bias and arch == "LlamaForCausalLM":  # attention_bias also biases o_proj
        table.append(("o_bias", "self_attn.o_proj.bias", (D,), (D,)))
    return table


def _to_ours(x: np.ndarray, shape: tuple) -> np.ndarray:
    return (x.T if x.ndim == 2 else x).reshape(shape)


def _to_hf(x: np.ndarray, hf_shape: tuple) -> np.ndarray:
    x = x.reshape(hf_shape[::-1]).T if len(hf_shape) == 2 else x.reshape(hf_shape)
    return np.ascontiguousarray(x)


# ----------------------------------------------------------------------------- loading

def _weight_files(path: pathlib.Path) -> list[pathlib.Path]:
    if (path / _INDEX).exists():
        weight_map = json.loads((path / _INDEX).read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path / _INDEX}: no 'weight_map' object")
        return [path / f for f in sorted(set(weight_map.values()))]
    if (path / _SINGLE).exists():
        return [path / _SINGLE]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors weights (pickle checkpoints are not read)")
    return files


class _Reader:
    """Name -> tensor over several safetensors files, opened lazily, read one at a time."""

    def __init__(self, files: list[pathlib.Path], stack: contextlib.ExitStack):
        self._handles: dict[str, Any] = {}
        for file in files:
            if not file.exists():
                raise ValueError(f"weight file {file} listed in the index does not exist")
            try:
                handle = stack.enter_context(safe_open(str(file), framework="numpy"))
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"weight file {file} is not a readable safetensors file "
                                 f"({type(e).__name__}: {e}); r1jax reads *.safetensors only, "
                                 "never pickle") from e
            for name in handle.keys():
                if name in self._handles:
                    raise ValueError(f"tensor {name} appears in more than one weight file")
                self._handles[name] = (handle, file)

    def names(self) -> set[str]:
        return set(self._handles)

    def dtype(self, name: str) -> str:
        st = self._handles[name][0].get_slice(name).get_dtype()
        if st not in _ST_DTYPES:
            raise ValueError(f"tensor {name}: unsupported dtype {st}")
        return _ST_DTYPES[st]

    def read(self, name: str, shape: tuple, dtype) -> np.ndarray:
        handle, file = self._handles[name]
        actual = tuple(handle.get_slice(name).get_shape())
        if actual != tuple(shape):
            raise ValueError(f"tensor {name}: expected shape {tuple(shape)}, got {actual}")
        try:
            x = handle.get_tensor(name)
        except (TypeError, ValueError):  # safetensors without numpy bfloat16 support
            with safe_open(str(file), framework="flax") as flax_handle:
                x = np.asarray(flax_handle.get_tensor(name))
        return x.astype(dtype, copy=False)


def _check_names(reader: _Reader, expected: set[str], cfg: ModelConfig) -> None:
    present = reader.names()
    missing = sorted(expected - present)
    if missing:
        raise ValueError(f"missing tensor {missing[0]}" +
                         (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = {n for n in present - expected if not _IGNORED.fullmatch(n)}
    if cfg.tie_embeddings:
        extra.discard("lm_head.weight")  # tied: transformers ignores it as well
    if extra:
        raise ValueError(f"unexpected tensor(s) not in a {cfg.n_layers}-layer model: "
                         f"{sorted(extra)[:5]}")


def load_hf(path: PathLike, *, dtype=None, mesh=None, rules=None) -> tuple[ModelConfig, Params]:
    """Reads a Qwen2/Qwen2.5 or Llama-3.x HF folder into (ModelConfig, params).

    dtype: parameter dtype ("float32", "bfloat16", "float16" or a numpy/jax dtype); None keeps
    the checkpoint's (that of `model.embed_tokens.weight`). cfg.param_dtype and
    cfg.compute_dtype are both set to it; change compute with `cfg.replace(...)`.
    max_seq_len is `max_position_embeddings`. Layers are stacked one parameter kind at a
    time, so the host holds at most one kind's numpy stack beside the finished params.
    mesh (and optional sharding rules): each tensor goes from the host straight to its
    `sharding.param_shardings` layout, every device receiving only its shard, so a model
    larger than one device loads when the mesh can hold it. Only local folders are read (a hub
    id is not downloaded).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a local folder; load_hf reads a local Hugging Face folder "
                         "(config.json, *.safetensors) and downloads nothing, so download the "
                         "model first (e.g. `huggingface-cli download ID --local-dir DIR`)")
    if not (path / "config.json").exists():
        raise ValueError(f"{path}: no config.json")
    hf = json.loads((path / "config.json").read_text())
    cfg, arch = config_from_hf(hf), _architecture(hf)
    with contextlib.ExitStack() as stack:
        reader = _Reader(_weight_files(path), stack)
        table = _layer_table(cfg, arch)
        expected = {"model.embed_tokens.weight", "model.norm.weight"}
        expected |= {f"model.layers.{i}.{suffix}" for i in range(cfg.n_layers)
                     for _, suffix, _, _ in table}
        if not cfg.tie_embeddings:
            expected.add("lm_head.weight")
        _check_names(reader, expected, cfg)
        if dtype is None:
            name = reader.dtype("model.embed_tokens.weight")
        else:
            name = jnp.dtype(dtype).name
            if name not in _ST_DTYPES.values():
                raise ValueError(f"load_hf dtype must be float32, bfloat16 or float16, "
                                 f"got {dtype!r}")
        cfg = cfg.replace(param_dtype=name, compute_dtype=name)
        np_dtype = jnp.dtype(name)
        V, D, L = cfg.vocab_size, cfg.d_model, cfg.n_layers
        place = _placer(cfg, mesh, rules)

        layers = {}
        for ours, suffix, hf_shape, shape in table:
            stacked = np.empty((L,) + shape, np_dtype)
            for i in range(L):
                stacked[i] = _to_ours(reader.read(f"model.layers.{i}.{suffix}", hf_shape,
                                                  np_dtype), shape)
            if ours == "o_bias":
                if np.any(stacked != 0):
                    i = int(np.flatnonzero(np.any(stacked != 0, axis=1))[0])
                    raise ValueError(f"tensor model.layers.{i}.{suffix} is nonzero; r1jax "
                                     "has no output-projection bias")
                continue
            layers[ours] = place(stacked, "layers", ours)
            del stacked
        params = {"embed": place(reader.read("model.embed_tokens.weight", (V, D), np_dtype),
                                 "embed"),
                  "layers": layers,
                  "final_norm": place(reader.read("model.norm.weight", (D,), np_dtype),
                                      "final_norm")}
        if not cfg.tie_embeddings:
            params["lm_head"] = place(reader.read("lm_head.weight", (V, D), np_dtype).T,
                                      "lm_head")
    return cfg, params


def _placer(cfg: ModelConfig, mesh, rules):
    """place(host_array, *path) -> a device array: on the default device without a mesh, else
    in the parameter's sharding (each device receives only its own shard)."""
    if mesh is None:
        return lambda x, *path: jnp.asarray(x)
    from r1jax import sharding
    tree = sharding.param_shardings(cfg, mesh, rules)

    def place(x, *path):
        sh = tree
        for key in path:
            sh = sh[key]
        return jax.make_array_from_callback(x.shape, sh, lambda index: x[index])
    return place


# ----------------------------------------------------------------------------- saving

def _hf_tensors(params: Params, cfg: ModelConfig, arch: str):
    """Yields (HF name, numpy array), one parameter kind at a time: each stacked kind is
    brought to the host once and cut into layers (order inside shards does not matter)."""
    V, D = cfg.vocab_size, cfg.d_model
    yield "model.embed_tokens.weight", np.asarray(params["embed"])
    for ours, suffix, hf_shape, _ in _layer_table(cfg, arch):
        if ours in params["layers"]:
            stacked = np.asarray(params["layers"][ours])
        else:  # biases the target architecture has and cfg lacks: zeros are exact
            stacked = np.zeros((cfg.n_layers,) + hf_shape, np.dtype(params["embed"].dtype))
        for i in range(cfg.n_layers):
            yield f"model.layers.{i}.{suffix}", _to_hf(stacked[i], hf_shape)
        del stacked
    yield "model.norm.weight", np.asarray(params["final_norm"])
    if not cfg.tie_embeddings:
        yield "lm_head.weight", _to_hf(np.asarray(params["lm_head"]), (V, D))


def _check_params(params: Params, cfg: ModelConfig) -> None:
    expected = param_shapes(cfg)
    flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    flat_actual = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for key, spec in flat_expected.items():
        name = jax.tree_util.keystr(key)
        if key not in flat_actual:
            raise ValueError(f"params lack {name} (expected shape {spec.shape})")
        if tuple(flat_actual[key].shape) != tuple(spec.shape):
            raise ValueError(f"params{name}: expected shape {tuple(spec.shape)}, "
                             f"got {tuple(flat_actual[key].shape)}")
    extra = sorted(jax.tree_util.keystr(k) for k in flat_actual if k not in flat_expected)
    if extra:
        raise ValueError(f"params have entries the config does not describe: {extra[:5]}")


def save_hf(params: Params, cfg: ModelConfig, path: PathLike, *,
            architecture: Optional[str] = None, max_shard_bytes: int = 4 << 30) -> None:
    """Writes `config.json` and safetensors weights that
    `transformers.AutoModelForCausalLM.from_pretrained(path)` loads with no missing or
    unexpected keys.

    architecture: "Qwen2ForCausalLM" (default when cfg.qkv_bias) or "LlamaForCausalLM"
    (default otherwise); biases the target has and cfg lacks are written as zeros.
    Weights keep their dtype. Above `max_shard_bytes` they are split into
    `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`; previous weight
    files of those names in the folder are removed first.
    """
    hf = config_to_hf(cfg, architecture)
    arch = hf["architectures"][0]
    _check_params(params, cfg)
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in [path / _INDEX, path / _SINGLE, *path.glob("model-*-of-*.safetensors")]:
        old.unlink(missing_ok=True)
    (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")

    # Shards are filled in order and written when full, so at most one shard is on the host.
    shards: list[list[str]] = [[]]
    pending: dict[str, np.ndarray] = {}
    pending_bytes, total = 0, 0
    tmp_names: list[pathlib.Path] = []

    def flush():
        tmp = path / f"shard-{len(tmp_names):05d}.tmp"
        save_file(pending, str(tmp), metadata={"format": "pt"})
        tmp_names.append(tmp)

    for name, x in _hf_tensors(params, cfg, arch):
        if pending and pending_bytes + x.nbytes > max_shard_bytes:
            flush()
            pending, pending_bytes = {}, 0
            shards.append([])
        pending[name] = x
        shards[-1].append(name)
        pending_bytes += x.nbytes
        total += x.nbytes
    flush()

    if len(tmp_names) == 1:
        tmp_names[0].replace(path / _SINGLE)
        return
    n, weight_map = len(tmp_names), {}
    for i, (tmp, names) in enumerate(zip(tmp_names, shards)):
        file = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tmp.replace(path / file)
        weight_map.update({name: file for name in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
