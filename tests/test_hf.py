"""r1jax.hf against transformers: random-weight Qwen2/Llama models built and run by torch."""
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from r1jax import hf, model

TOL = 1e-4

# name -> (architecture, config kwargs). Several shapes: GQA / MHA, tied / untied, with and
# without QKV bias, head_dim != hidden_size / heads, Llama-3 rope scaling (original length 16
# so that short sequences cross the low/medium/high frequency bands).
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CASES = {
    "qwen2_gqa_tied": ("qwen2", dict(hidden_size=48, num_attention_heads=4,
                                     num_key_value_heads=2, head_dim=16,
                                     tie_word_embeddings=True)),
    "qwen2_mha_untied": ("qwen2", dict(hidden_size=48, num_attention_heads=3,
                                       num_key_value_heads=3, tie_word_embeddings=False,
                                       rope_theta=1e6)),
    "llama_gqa_untied": ("llama", dict(hidden_size=64, num_attention_heads=8,
                                       num_key_value_heads=2, tie_word_embeddings=False)),
    "llama3_mha_tied_scaled": ("llama", dict(hidden_size=32, num_attention_heads=2,
                                             num_key_value_heads=2, head_dim=16,
                                             tie_word_embeddings=True, rope_theta=500000.0,
                                             rope_scaling=LLAMA3_ROPE)),
}


def _hf_model(kind: str, seed: int = 0, **kwargs):
    """A random float32 transformers model in eval mode. Every weight is drawn anew (norms
    around 1, biases nonzero) so that a mislaid tensor shows in the logits."""
    base = dict(vocab_size=101, intermediate_size=72, num_hidden_layers=2,
                max_position_embeddings=64, rms_norm_eps=1e-5, attn_implementation="eager")
    base.update(kwargs)
    config_cls = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[kind]
    config = config_cls(**base)
    torch.manual_seed(seed)
    net = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / max(p.shape[-1], 1) ** 0.5)
        if kind == "llama" and base.get("attention_bias"):
            for layer in net.model.layers:  # r1jax has no o_proj bias; zero loads exactly
                layer.self_attn.o_proj.bias.zero_()
    return net


def _hf_logits(net, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def _tokens(vocab: int, shape=(2, 20), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


# One compile per shape instead of one per eager op.
_forward = jax.jit(model.forward, static_argnums=2)
_prefill = jax.jit(model.prefill, static_argnums=4)
_decode_step = jax.jit(model.decode_step, static_argnums=4)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_hf_matches_transformers(tmp_path, case):
    kind, kwargs = CASES[case]
    net = _hf_model(kind, **kwargs)
    net.save_pretrained(tmp_path, safe_serialization=True)
    cfg, params = hf.load_hf(tmp_path)
    assert cfg.qkv_bias == (kind == "qwen2")
    assert cfg.tie_embeddings == kwargs["tie_word_embeddings"]
    assert cfg.max_seq_len == 64 and cfg.param_dtype == "float32"
    assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(
        lambda x: x.shape, model.param_shapes(cfg))
    tokens = _tokens(cfg.vocab_size)
    ours = _forward(params, jnp.asarray(tokens), cfg)
    assert _max_diff(ours, _hf_logits(net, tokens)) < TOL


def test_llama3_rope_scaling_is_read(tmp_path):
    kind, kwargs = CASES["llama3_mha_tied_scaled"]
    _hf_model(kind, **kwargs).save_pretrained(tmp_path, safe_serialization=True)
    cfg, _ = hf.load_hf(tmp_path)
    assert cfg.rope_scaling == (8.0, 1.0, 4.0, 16) and cfg.rope_theta == 500000.0
    # Both spellings of the rope keys give the same config.
    old_style = {**json.loads((tmp_path / "config.json").read_text()),
                 "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE}
    old_style.pop("rope_parameters", None)
    assert hf.config_from_hf(old_style) == hf.config_from_hf(
        json.loads((tmp_path / "config.json").read_text()))


def test_llama_with_attention_bias(tmp_path):
    """Llama attention_bias=True: q/k/v biases load; a zero o_proj bias is accepted."""
    net = _hf_model("llama", hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                    attention_bias=True, tie_word_embeddings=False)
    net.save_pretrained(tmp_path, safe_serialization=True)
    cfg, params = hf.load_hf(tmp_path)
    assert cfg.qkv_bias
    tokens = _tokens(cfg.vocab_size)
    assert _max_diff(_forward(params, jnp.asarray(tokens), cfg),
                     _hf_logits(net, tokens)) < TOL
    # A nonzero o_proj bias has nowhere to go: refused, naming the tensor.
    file = tmp_path / "model.safetensors"
    tensors = load_file(str(file))
    tensors["model.layers.1.self_attn.o_proj.bias"] += 1.0
    save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.o_proj\.bias"):
        hf.load_hf(tmp_path)


def test_sharded_checkpoint(tmp_path):
    kind, kwargs = CASES["qwen2_mha_untied"]
    net = _hf_model(kind, **kwargs)
    net.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    cfg, params = hf.load_hf(tmp_path)
    tokens = _tokens(cfg.vocab_size)
    assert _max_diff(_forward(params, jnp.asarray(tokens), cfg),
                     _hf_logits(net, tokens)) < TOL


def test_bf16_checkpoint(tmp_path):
    kind, kwargs = CASES["qwen2_gqa_tied"]
    net = _hf_model(kind, **kwargs).to(torch.bfloat16)
    net.save_pretrained(tmp_path, safe_serialization=True)
    cfg, params = hf.load_hf(tmp_path)
    assert cfg.param_dtype == "bfloat16" and params["embed"].dtype == jnp.bfloat16
    want = net.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()
    got = np.asarray(params["layers"]["q"][1], np.float32).reshape(cfg.d_model, -1).T
    np.testing.assert_array_equal(got, want)
    cfg32, params32 = hf.load_hf(tmp_path, dtype="float32")  # upcasting is exact
    assert cfg32.param_dtype == "float32" and params32["embed"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(params32["embed"]),
                                  np.asarray(params["embed"], np.float32))


def _random_params(cfg: model.ModelConfig, seed: int = 0) -> model.Params:
    """Parameters of cfg's shapes with every leaf (norms and biases too) random; numpy
    rather than init_params, so that no XLA compile is spent on initialisation."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape).astype(s.dtype)),
                        model.param_shapes(cfg))


ROUND_TRIP = {
    "qwen2_tied": (dict(qkv_bias=True, tie_embeddings=True), None),
    "llama_untied_scaled": (dict(qkv_bias=False, tie_embeddings=False,
                                 rope_scaling=(8.0, 1.0, 4.0, 16), rope_theta=500000.0), None),
    "llama_with_qkv_bias": (dict(qkv_bias=True, tie_embeddings=False), "LlamaForCausalLM"),
    "qwen2_without_qkv_bias": (dict(qkv_bias=False, tie_embeddings=True), "Qwen2ForCausalLM"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_save_hf_loads_in_transformers(tmp_path, case):
    overrides, arch = ROUND_TRIP[case]
    cfg = model.ModelConfig(vocab_size=83, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                            head_dim=12, d_ff=48, norm_eps=1e-5, max_seq_len=64, **overrides)
    params = _random_params(cfg)
    hf.save_hf(params, cfg, tmp_path, architecture=arch)
    net, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager", dtype=torch.float32)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    want_arch = arch or ("Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM")
    assert type(net).__name__ == want_arch
    tokens = _tokens(cfg.vocab_size)
    ours = _forward(params, jnp.asarray(tokens), cfg)
    assert _max_diff(ours, _hf_logits(net.eval(), tokens)) < TOL
    # And back: bit-exact.
    cfg2, params2 = hf.load_hf(tmp_path)
    if want_arch == "Qwen2ForCausalLM" and not cfg.qkv_bias:  # Qwen2 always has biases
        assert cfg2 == cfg.replace(qkv_bias=True)
        for name in ("q_bias", "k_bias", "v_bias"):
            assert not np.any(np.asarray(params2["layers"].pop(name)))
    else:
        assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_save_hf_sharded_and_bf16_round_trip(tmp_path):
    cfg = model.ModelConfig(vocab_size=83, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
                            head_dim=8, d_ff=48, qkv_bias=True, tie_embeddings=False,
                            param_dtype="bfloat16", compute_dtype="bfloat16")
    params = _random_params(cfg)
    hf.save_hf(params, cfg, tmp_path, max_shard_bytes=8_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (tmp_path / "model.safetensors").exists()
    cfg2, params2 = hf.load_hf(tmp_path)
    assert cfg2 == cfg and params2["embed"].dtype == jnp.bfloat16
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    net, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert net.lm_head.weight.dtype == torch.bfloat16
    want = np.asarray(params["lm_head"]).T.astype(np.float32)
    np.testing.assert_array_equal(net.lm_head.weight.detach().float().numpy(), want)
    # Saving again unsharded replaces the shards rather than leaving a stale index.
    hf.save_hf(params, cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_cached_decoding_matches_forward(tmp_path):
    """Prefill ragged prompts of a loaded HF model, decode a few tokens per row at per-row
    positions: every step's logits equal the full forward pass on the whole sequence."""
    kind, kwargs = CASES["qwen2_gqa_tied"]
    net = _hf_model(kind, **kwargs)
    net.save_pretrained(tmp_path, safe_serialization=True)
    cfg, params = hf.load_hf(tmp_path)
    lengths = np.array([5, 1, 8], np.int32)
    steps, T = 4, 8
    seqs = _tokens(cfg.vocab_size, (3, T + steps), seed=3)
    prompts = np.where(np.arange(T)[None] < lengths[:, None], seqs[:, :T], 0)
    cache = model.init_cache(cfg, batch=3, length=T + steps)
    logits, cache = _prefill(params, cache, jnp.asarray(prompts), jnp.asarray(lengths),
                                  cfg)
    # Causal, so one full pass over the unpadded sequences gives every position's logits.
    full = np.asarray(_forward(params, jnp.asarray(seqs), cfg))
    assert _max_diff(full, _hf_logits(net, seqs)) < TOL
    rows = np.arange(3)
    assert _max_diff(logits, full[rows, lengths - 1]) < TOL
    for s in range(steps):
        positions = lengths + s
        logits, cache = _decode_step(params, cache, jnp.asarray(seqs[rows, positions]),
                                          jnp.asarray(positions), cfg)
        assert _max_diff(logits, full[rows, positions]) < TOL, s


# ----------------------------------------------------------------------------- errors

@pytest.fixture
def saved_qwen2(tmp_path):
    kind, kwargs = CASES["qwen2_mha_untied"]
    _hf_model(kind, **kwargs).save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


def _edit_weights(path, edit):
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_unknown_architecture(saved_qwen2):
    _edit_config(saved_qwen2, architectures=["MistralForCausalLM"], model_type="mistral")
    with pytest.raises(ValueError, match="MistralForCausalLM"):
        hf.load_hf(saved_qwen2)
    _edit_config(saved_qwen2, architectures=None, model_type="gemma")
    with pytest.raises(ValueError, match="gemma"):
        hf.load_hf(saved_qwen2)


def test_missing_tensor(saved_qwen2):
    _edit_weights(saved_qwen2, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        hf.load_hf(saved_qwen2)


def test_missing_lm_head_when_untied(saved_qwen2):
    _edit_weights(saved_qwen2, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"lm_head\.weight"):
        hf.load_hf(saved_qwen2)


def test_wrong_shape(saved_qwen2):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((40, 48), np.float32)
    _edit_weights(saved_qwen2, edit)
    with pytest.raises(ValueError, match=r"k_proj\.weight: expected shape \(48, 48\), "
                                         r"got \(40, 48\)"):
        hf.load_hf(saved_qwen2)


def test_unexpected_tensor(saved_qwen2):
    def edit(t):
        t["model.layers.2.mlp.up_proj.weight"] = np.zeros((72, 48), np.float32)
    _edit_weights(saved_qwen2, edit)
    with pytest.raises(ValueError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
        hf.load_hf(saved_qwen2)


def test_tied_checkpoint_ignores_lm_head(tmp_path):
    kind, kwargs = CASES["qwen2_gqa_tied"]
    net = _hf_model(kind, **kwargs)
    net.save_pretrained(tmp_path, safe_serialization=True)

    def edit(t):
        t["lm_head.weight"] = np.ones_like(t["model.embed_tokens.weight"])
    _edit_weights(tmp_path, edit)
    cfg, params = hf.load_hf(tmp_path)
    assert "lm_head" not in params
    tokens = _tokens(cfg.vocab_size)
    assert _max_diff(_forward(params, jnp.asarray(tokens), cfg),
                     _hf_logits(net, tokens)) < TOL


def test_unsupported_config_values(saved_qwen2):
    with pytest.raises(ValueError, match="use_sliding_window"):
        hf.config_from_hf({**json.loads((saved_qwen2 / "config.json").read_text()),
                           "use_sliding_window": True})
    with pytest.raises(ValueError, match="yarn"):
        hf.config_from_hf({**json.loads((saved_qwen2 / "config.json").read_text()),
                           "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="hidden_size"):
        config = json.loads((saved_qwen2 / "config.json").read_text())
        config.pop("hidden_size")
        hf.config_from_hf(config)


def test_no_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(hf.config_to_hf(
        model.ModelConfig.preset("tiny"))))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="safetensors"):
        hf.load_hf(tmp_path)


def test_save_hf_rejects_wrong_params(tmp_path):
    cfg = model.ModelConfig(vocab_size=17, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1,
                            head_dim=4, d_ff=16)
    params = _random_params(cfg)
    params["layers"]["up"] = params["layers"]["up"][:, :, :8]
    with pytest.raises(ValueError, match=r"\['layers'\]\['up'\]: expected shape \(1, 8, 16\)"):
        hf.save_hf(params, cfg, tmp_path)


def test_config_round_trip():
    for name in ("tiny", "qwen2.5-0.5b", "llama3.2-1b"):
        cfg = model.ModelConfig.preset(name, remat=False)
        assert hf.config_from_hf(hf.config_to_hf(cfg)) == cfg


# Verbatim (abridged of token ids) config.json files of published checkpoints.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
    "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936}
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256}


@pytest.mark.parametrize("hf_config, preset", [(QWEN25_05B, "qwen2.5-0.5b"),
                                               (LLAMA32_1B, "llama3.2-1b")])
def test_published_configs_match_presets(hf_config, preset):
    # remat is a compute choice (the presets turn it on), not part of the checkpoint.
    assert hf.config_from_hf(hf_config) == model.ModelConfig.preset(preset, remat=False)


def test_load_hf_straight_into_shardings(tmp_path):
    """On 8 simulated devices every tensor lands in its intended sharding, each device holding
    only its shard (nothing whole on one device for a sharded parameter), and the logits are
    those of the unsharded load."""
    from r1jax import sharding
    kind, kwargs = CASES["qwen2_mha_untied"]
    _hf_model(kind, **kwargs).save_pretrained(tmp_path, safe_serialization=True)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    cfg, params = hf.load_hf(tmp_path, mesh=mesh)
    _, plain = hf.load_hf(tmp_path)
    want = sharding.param_shardings(cfg, mesh)
    split = 0
    for (path, x), sh, ref in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                  jax.tree.leaves(want), jax.tree.leaves(plain)):
        assert x.sharding.is_equivalent_to(sh, x.ndim), path
        shard_shape = x.addressable_shards[0].data.shape
        assert shard_shape == sh.shard_shape(x.shape), path
        split += shard_shape != x.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(ref))
    assert split >= 5  # the big matrices really are split across devices
    tokens = _tokens(cfg.vocab_size)
    assert _max_diff(_forward(params, jnp.asarray(tokens), cfg),
                     _forward(plain, jnp.asarray(tokens), cfg)) < 1e-5


def test_load_hf_names_what_it_reads(tmp_path):
    with pytest.raises(ValueError, match="not a local folder.*downloads nothing"):
        hf.load_hf("Qwen/Qwen2.5-0.5B")


def test_corrupt_weight_file_is_named(tmp_path):
    kind, kwargs = CASES["qwen2_mha_untied"]
    _hf_model(kind, **kwargs).save_pretrained(tmp_path, safe_serialization=True)
    file = tmp_path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors"):
        hf.load_hf(tmp_path)
