"""Decode throughput: r1jax `generate` vs Hugging Face transformers `generate`, side by side.

Same random Qwen2-shaped weights (a transformers model is initialised, saved as safetensors and
loaded with `r1jax.hf.load_hf`), same prompts, same forced number of new tokens (greedy, EOS
off: HF gets min_new_tokens = max_new_tokens). Reports tokens/s, the ratio, and the fraction
of the memory-bandwidth bound: bound = batch / (bytes per decode step / copy bandwidth), bytes
per step = all weights + the KV cache up to the average context (prompt + new / 2), copy
bandwidth measured in this run (a jitted `a + 1` over a large array, read + write).

CPU (the issue's shape, ~38.9M parameters, float32):
  python experiments/benchmarks/decode.py --device cpu
GPU (bf16, Qwen2.5 shapes; batch 256 = 16 prompts x 16 samples):
  python experiments/benchmarks/decode.py --device gpu --preset qwen2.5-0.5b \\
      --dtype bfloat16 --prompt-len 128 --new-tokens 256 --batch 1 64 256
Needs only jax, torch, transformers and safetensors (no ml_collections / seqio).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

CPU_SHAPE = dict(vocab_size=32000, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2,
                 head_dim=64, d_ff=1408, rope_theta=1e6, qkv_bias=True, tie_embeddings=True,
                 max_seq_len=4096)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--preset", default=None,
                   help="r1jax ModelConfig preset (qwen2.5-0.5b, qwen2.5-1.5b); default: the "
                        "~40M CPU shape")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: float32 on "
                                                  "cpu, bfloat16 on gpu)")
    p.add_argument("--prompt-len", type=int, default=None, help="default 32 cpu / 128 gpu")
    p.add_argument("--new-tokens", type=int, default=None, help="default 128 cpu / 256 gpu")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="rows per run (default 1 8 on cpu, 1 64 256 on gpu)")
    p.add_argument("--samples-per-prompt", type=int, default=16,
                   help="batches >= 256 use batch / this many distinct prompts")
    p.add_argument("--repeats", type=int, default=2, help="timed r1jax calls (best kept)")
    p.add_argument("--skip-hf", action="store_true", help="time r1jax only")
    p.add_argument("--attention", default=None,
                   choices=["auto", "xla", "dot_product", "chunked"],
                   help="r1jax ModelConfig.attention (default: the preset's, auto: cuDNN or "
                        "chunked prefill, 'xla' decode steps)")
    p.add_argument("--sampled", action="store_true",
                   help="also time r1jax sampling at temperature 1 (no truncation)")
    p.add_argument("--threads", type=int, default=0,
                   help="cpu: 1 pins both torch and XLA to one thread (a fairer comparison on "
                        "a shared, loaded machine); 0 = library defaults (all cores)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    gpu = args.device == "gpu"
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.prompt_len = args.prompt_len or (128 if gpu else 32)
    args.new_tokens = args.new_tokens or (256 if gpu else 128)
    args.batch = args.batch or ([1, 64, 256] if gpu else [1, 8])
    return args


def copy_bandwidth(jax, jnp, nbytes: int) -> float:
    """Bytes/s of a jitted elementwise pass (read + write) over an array of `nbytes`."""
    a = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda x: x + 1)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def build_models(args, torch, transformers, jax):
    """(cfg, params, hf_model): random HF Qwen2 weights copied into r1jax through safetensors."""
    from r1jax import hf, model

    cfg = model.ModelConfig.preset(args.preset) if args.preset else model.ModelConfig(**CPU_SHAPE)
    cfg = cfg.replace(param_dtype=args.dtype, compute_dtype=args.dtype,
                      max_seq_len=max(cfg.max_seq_len, 4096))
    hf_cfg = transformers.Qwen2Config(**{k: v for k, v in hf.config_to_hf(cfg).items()
                                         if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    hf_model = transformers.Qwen2ForCausalLM(hf_cfg).to(tdtype).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        loaded_cfg, params = hf.load_hf(tmp, dtype=args.dtype)
    cfg = cfg.replace(max_seq_len=max(loaded_cfg.max_seq_len, 4096))
    if args.attention:
        cfg = cfg.replace(attention=args.attention)
    if args.device == "gpu":
        hf_model = hf_model.to("cuda")
    params = jax.device_put(params)
    return cfg, params, hf_model


def time_r1jax(jax, cfg, params, prompts, n_samples, new_tokens, repeats, **knobs):
    from r1jax import sampler

    s = sampler.SamplingConfig(max_new_tokens=new_tokens, num_samples=n_samples,
                               temperature=knobs.get("temperature", 0.0),
                               top_p=knobs.get("top_p", 1.0))
    out = sampler.generate(params, cfg, prompts, jax.random.key(0), s)  # compile
    out.tokens.block_until_ready()
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        out = sampler.generate(params, cfg, prompts, jax.random.key(r), s)
        out.tokens.block_until_ready()
        best = min(best, time.perf_counter() - t)
    rows = len(prompts) * n_samples
    return rows * new_tokens / best, np.asarray(out.tokens).reshape(rows, new_tokens)


def time_hf(torch, hf_model, prompts, n_samples, new_tokens, device):
    ids = torch.tensor(np.repeat(np.asarray(prompts), n_samples, axis=0), device=device)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                  min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        hf_model.generate(ids[:, :8], **dict(kwargs, max_new_tokens=4, min_new_tokens=4))
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = hf_model.generate(ids, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return ids.shape[0] * new_tokens / dt, out[:, ids.shape[1]:].cpu().numpy()


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false"
                                       " intra_op_parallelism_threads=1")
    else:  # leave GPU memory for the torch model beside jax's pool
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, params, hf_model = build_models(args, torch, transformers, jax)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    bw = copy_bandwidth(jax, jnp, 1 << (29 if args.device == "gpu" else 28))
    dbytes = jnp.dtype(cfg.dtype).itemsize
    kv_per_token = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * dbytes
    avg_ctx = args.prompt_len + args.new_tokens / 2
    info = {"device": str(jax.devices()[0].device_kind), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "params": n_params,
            "dtype": args.dtype, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "attention": cfg.attention,
            "copy_bandwidth_GBps": bw / 1e9, "threads": args.threads or os.cpu_count(),
            "load_avg": os.getloadavg(), "argv": sys.argv[1:]}
    print(json.dumps(info))
    rng = np.random.default_rng(0)
    results = []
    for batch in args.batch:
        n_samples = args.samples_per_prompt if batch >= 256 else 1
        n_prompts = batch // n_samples
        prompts = rng.integers(1, cfg.vocab_size, (n_prompts, args.prompt_len)).tolist()
        step_bytes = weight_bytes + batch * avg_ctx * kv_per_token
        bound = batch / (step_bytes / bw)
        row = {"batch": batch, "prompts": n_prompts, "samples": n_samples,
               "bound_tok_s": bound}
        r1_tps, r1_tokens = time_r1jax(jax, cfg, params, prompts, n_samples, args.new_tokens,
                                       args.repeats)
        row.update(r1jax_tok_s=r1_tps, r1jax_frac_bound=r1_tps / bound)
        if args.sampled:
            tps, _ = time_r1jax(jax, cfg, params, prompts, n_samples, args.new_tokens,
                                args.repeats, temperature=1.0)
            row.update(r1jax_sampled_tok_s=tps, r1jax_sampled_frac_bound=tps / bound)
        if not args.skip_hf:
            hf_tps, hf_tokens = time_hf(torch, hf_model, prompts, n_samples, args.new_tokens,
                                        "cuda" if args.device == "gpu" else "cpu")
            # greedy agreement: share of rows whose first 16 tokens match (numerics may
            # flip near-ties later on)
            same = (hf_tokens[:, :16] == r1_tokens[:, :16]).all(axis=1).mean()
            row.update(hf_tok_s=hf_tps, ratio=r1_tps / hf_tps, hf_frac_bound=hf_tps / bound,
                       greedy_rows_agree_16=float(same))
        results.append(row)
        print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
