"""Where the time of one GRPO step goes: rollout / log-probs (reference + old policy) / update,
with peak memory and the model-FLOPs utilisation of each phase.

One step as `r1jax.train.run_grpo` runs it, split into phases that are timed separately
(each phase is compiled by a warm-up call first, bracketed by `block_until_ready`, and
reported as the median of --repeats calls):
  rollout   `r1jax.rollout.sample` of P prompts x G samples at temperature 1, with no stop
            token, so every row generates exactly --new_tokens tokens (a random policy would
            otherwise stop at random lengths and the timing would mean nothing);
  log-probs `grpo.ref_logprobs_fn` over the [B, T] rollouts under the reference parameters,
            and `grpo.compute_old_logprobs` under the policy (what a sampler at temperature
            != 1 or with truncation needs; at temperature 1 the loop reuses the sampler's),
            in `grpo.logprob_passes` row blocks (--logprob_micro_batch);
  update    the jitted `grpo.make_grpo_step` (policy forward + backward + AdamW) on a batch
            that carries the reference log-probs (so the update holds no reference pass).
The host work between phases (detokenising, rewards, building the batch) is not timed here.

MFU = model FLOPs / time / peak, model FLOPs = 2 * params * tokens per forward pass (log-probs:
one pass each, B * T tokens; rollout: B * new tokens) and 6 * params * B * T for the update
(forward + backward; the recomputation of the chunked LM head is not counted). params counts
the tied embedding once (it is the LM head's matmul). Attention FLOPs are not counted.

Peak memory: on GPU `device.memory_stats()["peak_bytes_in_use"]` after each phase (a running
peak, so each value covers the phases before it); on CPU the process's max RSS. For the
log-prob and update programs also the compiled `memory_analysis()` (arguments, outputs and
temporaries of the XLA program).

Settings:
  tiny          shapes of configs/r1_zero.py "tiny": 16 prompts x 8 samples, prompts of
                arithmetic problems (<= 48 tokens), 96 new tokens, the tiny byte-level model,
                float32, random weights. CPU:
                  python experiments/benchmarks/grpo_step.py --setting tiny
  qwen2.5-0.5b  Qwen2.5-0.5B shapes, random weights, bf16: 16 prompts x 16 samples, random
                prompts of 256 tokens, 512 new tokens, update in --grad_accum micro-batches. GPU:
                  python experiments/benchmarks/grpo_step.py --setting qwen2.5-0.5b
                --shrink runs the same code path at toy sizes (2 layers, toy widths and
                vocabulary, 2 x 2 rows, 32 + 32 tokens), e.g. on CPU to check that it works.
  qwen2.5-1.5b  the same at Qwen2.5-1.5B shapes.
The qwen2.5 settings import neither ml_collections nor seqio (asserted).

--attention / --remat override the model's ModelConfig.attention / .remat. --memory_only
compiles the log-prob and update programs from abstract shapes (nothing is allocated or run,
seconds on a CPU) and prints their memory_analysis(): how --grad_accum and
--logprob_micro_batch fit a device without having one, e.g.
  python experiments/benchmarks/grpo_step.py --setting qwen2.5-0.5b --memory_only \\
      --prompts 4 --samples 16 --prompt_len 256 --new_tokens 3840 --grad_accum 4
(XLA:CPU keeps float32 copies of bf16 weights and activations that a GPU would not, so these
numbers overstate a GPU's.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import grpo, model, rollout, sampler  # noqa: E402
from r1jax.train import grpo_batch  # noqa: E402
from r1jax.train_state import TrainState, make_optimizer  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Dense bf16 peak of an H100 SXM; CPU: the jax float32 2048^3 matmul rate measured on the
# 2-core development machine (measured there), a practical rather than a datasheet peak.
GPU_PEAK_TFLOPS = 989.0
CPU_PEAK_TFLOPS = 0.195


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b"],
                   default="tiny")
    p.add_argument("--shrink", action="store_true",
                   help="toy sizes on the same code path (2 layers, toy widths and vocabulary, "
                        "2 prompts x 2 samples, 32 + 32 tokens), to check the script on a CPU")
    p.add_argument("--prompts", type=int, default=None, help="P (default: the setting's)")
    p.add_argument("--samples", type=int, default=None, help="G samples per prompt")
    p.add_argument("--prompt_len", type=int, default=None,
                   help="qwen2.5 setting: prompt tokens (tiny: real problems, <= 48)")
    p.add_argument("--new_tokens", type=int, default=None, help="generated tokens per row")
    p.add_argument("--grad_accum", type=int, default=None,
                   help="micro-batches per update (default: 1 tiny, 2 qwen2.5: 128 rows of "
                        "768 tokens per micro-batch)")
    p.add_argument("--logprob_chunk", type=int, default=128,
                   help="sequence positions per LM-head block")
    p.add_argument("--logprob_micro_batch", type=int, default=0,
                   help="rows per log-prob pass (0: as many as hold grpo.LOGPROB_TOKENS "
                        "tokens)")
    p.add_argument("--attention", choices=model.ATTENTION_IMPLS, default=None,
                   help="ModelConfig.attention (default: the preset's, 'auto')")
    p.add_argument("--remat", choices=model.REMAT_POLICIES, default=None,
                   help="ModelConfig.remat (default: the preset's: none tiny, block qwen2.5)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per phase (median)")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help=f"peak FLOP/s for MFU (default {GPU_PEAK_TFLOPS:g} on GPU: H100 bf16 "
                        f"dense; {CPU_PEAK_TFLOPS:g} on CPU)")
    p.add_argument("--memory_only", action="store_true",
                   help="only compile the log-prob and update programs from abstract shapes "
                        "(nothing allocated or run) and print their memory_analysis(): sizes "
                        "--grad_accum for a device without having one")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- setup

def tiny_setup(args):
    """(model cfg, prompts [P ragged token lists], GRPOConfig, lr) from configs/r1_zero.py."""
    import importlib.util

    from r1jax import prompts as prompts_lib
    from r1jax import tasks
    from r1jax.tokenizer import ByteTokenizer
    spec = importlib.util.spec_from_file_location("r1_zero_config",
                                                  os.path.join(REPO, "configs", "r1_zero.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    P = args.prompts or c.grpo.prompts_per_step
    args.samples = args.samples or c.grpo.num_generations
    args.new_tokens = args.new_tokens or c.grpo.max_new_tokens
    args.grad_accum = args.grad_accum or c.grpo.grad_accum
    cfg = model.ModelConfig.preset(c.model.preset, compute_dtype=c.model.compute_dtype)
    if args.shrink:
        cfg = cfg.replace(n_layers=2)
        P, args.samples, args.new_tokens = 2, 2, 32
    tok = ByteTokenizer()
    problems = tasks.generate(c.task.name, 0, P, split="train", num_ops=tuple(c.task.num_ops),
                              digits=tuple(c.task.digits))
    prompt_ids = [tok.encode(prompts_lib.render(c.task.template, p.question)) for p in problems]
    args.prompt_len = max(len(x) for x in prompt_ids)
    if args.prompt_len > c.grpo.max_prompt_tokens:
        raise ValueError(f"prompt of {args.prompt_len} tokens > max_prompt_tokens")
    # The loop pads every batch to max_prompt_tokens + max_new_tokens (rounded up to 16).
    args.seq_len = -(-(c.grpo.max_prompt_tokens + args.new_tokens) // 16) * 16
    gcfg = grpo.GRPOConfig(num_generations=args.samples, beta=c.grpo.beta,
                           epsilon_low=c.grpo.epsilon_low, epsilon_high=c.grpo.epsilon_high,
                           aggregation=c.grpo.aggregation, grad_accum=args.grad_accum,
                           logprob_chunk=args.logprob_chunk)
    return cfg, prompt_ids, gcfg, c.grpo.learning_rate, tok.pad_id, tok.eos_id


def qwen_setup(args):
    """Qwen2.5 shapes (the --setting preset), random prompts of exactly prompt_len tokens, the
    qwen2.5 configs' GRPO settings (written out: this path does not import ml_collections)."""
    cfg = model.ModelConfig.preset(args.setting)
    P = args.prompts or 16
    args.samples = args.samples or 16
    args.prompt_len = args.prompt_len or 256
    args.new_tokens = args.new_tokens or 512
    args.grad_accum = args.grad_accum or 2
    pad = eos = 151643  # <|endoftext|> of the Qwen2.5 tokenizer: only marks truncation here
    if args.shrink:
        # The preset's structure (GQA 14 / 2 heads of 64, qkv biases, tied, bf16, remat
        # "block" with the MLP in chunks, chunked attention over several blocks) at toy widths.
        cfg = cfg.replace(n_layers=2, d_model=128, d_ff=256, vocab_size=1024,
                          attention_block=16, mlp_chunk=64)
        P, args.samples, args.prompt_len, args.new_tokens = 2, 2, 32, 32
        args.grad_accum = 2
        pad = eos = cfg.vocab_size - 1
    args.seq_len = -(-(args.prompt_len + args.new_tokens) // 16) * 16
    rng = np.random.default_rng(0)
    prompt_ids = rng.integers(0, cfg.vocab_size, (P, args.prompt_len)).tolist()
    gcfg = grpo.GRPOConfig(num_generations=args.samples, beta=0.04,
                           grad_accum=args.grad_accum, logprob_chunk=args.logprob_chunk)
    return cfg, prompt_ids, gcfg, 1e-6, pad, eos


# ----------------------------------------------------------------------------- measuring

def peak_memory_bytes() -> tuple[str, int]:
    """(what, bytes): the device's running peak on accelerators, else the process max RSS."""
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return "device peak_bytes_in_use", int(stats["peak_bytes_in_use"])
    return "process max RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def compiled_memory(jitted, *args, **kwargs) -> dict | None:
    """memory_analysis() of the compiled program (bytes), or None where unsupported."""
    return memory_of(jitted.lower(*args, **kwargs).compile())


def memory_of(compiled) -> dict | None:
    """memory_analysis() of a compiled program (bytes), or None where unsupported."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends/versions do not implement it
        return None
    if m is None:
        return None
    return {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
            for k in ("argument", "output", "temp", "generated_code")}


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """Median seconds of `repeats` calls of fn() after one warm-up (compile) call."""
    out = jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def setup(args):
    """The setting's (cfg, prompts, GRPOConfig, lr, pad, eos) with the command line's
    attention / remat / log-prob micro-batch choices applied."""
    cfg, prompt_ids, gcfg, lr, pad_id, eos_id = (tiny_setup if args.setting == "tiny"
                                                 else qwen_setup)(args)
    cfg = cfg.replace(**{k: getattr(args, k) for k in ("attention", "remat")
                         if getattr(args, k) is not None})
    gcfg = dataclasses.replace(gcfg, logprob_micro_batch=args.logprob_micro_batch)
    return cfg, prompt_ids, gcfg, lr, pad_id, eos_id


def logprob_kwargs(gcfg) -> dict:
    """Keywords of grpo.ref_logprobs_fn as the loop passes them."""
    return dict(chunk=gcfg.logprob_chunk, micro_batch=gcfg.logprob_micro_batch or None)


def memory_only(args) -> str:
    """memory_analysis() of the log-prob and update programs compiled from abstract shapes."""
    cfg, prompt_ids, gcfg, lr, _, _ = setup(args)
    B, T = len(prompt_ids) * args.samples, args.seq_len
    tx = make_optimizer(lr, total_steps=1000, schedule="constant")
    state = jax.eval_shape(lambda: TrainState.create(model.init_params(cfg, jax.random.key(0)),
                                                     tx))
    f32 = jax.ShapeDtypeStruct((B, T - 1), jnp.float32)
    batch = {"tokens": jax.ShapeDtypeStruct((B, T), jnp.int32), "completion_mask": f32,
             "old_logprobs": f32, "ref_logprobs": f32,
             "advantages": jax.ShapeDtypeStruct((B,), jnp.float32)}
    passes, rows = grpo.logprob_passes(B, T, gcfg.logprob_micro_batch or None)
    mem = {f"log-probs ({passes} passes of {rows} rows)": compiled_memory(
               grpo.ref_logprobs_fn, state.params, cfg, batch["tokens"],
               batch["completion_mask"], **logprob_kwargs(gcfg)),
           f"update ({gcfg.grad_accum} micro-batches of {B // gcfg.grad_accum} rows)":
               compiled_memory(grpo.make_grpo_step(cfg, tx, gcfg), state, None, batch)}
    upd = list(mem.values())[1]
    per_row = "" if not upd else (f"; update temporaries per micro-batch row "
                                  f"{_gib(upd['temp'] // (B // gcfg.grad_accum))}")
    return (f"{args.setting}{' (shrunk)' if args.shrink else ''} on "
            f"{jax.devices()[0].device_kind}: B={B}, T={T}, attention {cfg.attention}, "
            f"remat {cfg.remat}{per_row}\n\n" + memory_table(mem))


def run(args) -> dict:
    cfg, prompt_ids, gcfg, lr, pad_id, eos_id = setup(args)
    P, G, M, T = len(prompt_ids), args.samples, args.new_tokens, args.seq_len
    B = P * G
    on_gpu = jax.default_backend() != "cpu"
    peak_tflops = args.peak_tflops or (GPU_PEAK_TFLOPS if on_gpu else CPU_PEAK_TFLOPS)
    n_params = cfg.num_params()
    key = jax.random.key(0)
    params = model.init_params(cfg, key)
    ref_params = jax.tree.map(jnp.copy, params)  # the policy's buffers are donated
    rows, memory = {}, {}

    # 1. rollout: forced length (no stop token), temperature 1.
    sampling = sampler.SamplingConfig(max_new_tokens=M, num_samples=G, temperature=1.0,
                                      stop_tokens=())
    keys = iter(jax.random.split(jax.random.key(1), args.repeats + 1))
    t, ts, roll = timed(lambda: rollout.sample(params, cfg, prompt_ids, next(keys), sampling,
                                               pad_id=pad_id, length=T), args.repeats)
    if not (np.asarray(roll.lengths) == M).all():
        raise RuntimeError("rollout rows stopped early; the timing would not be comparable")
    rows["rollout"] = dict(seconds=t, all=ts, tokens=B * M, flops=2 * n_params * B * M)
    memory["rollout"] = peak_memory_bytes()

    # The GRPO batch as the loop builds it (random rewards -> group advantages).
    rewards = np.random.default_rng(0).integers(0, 2, (P, G)).astype(np.float32)
    adv = np.asarray(grpo.group_advantages(jnp.asarray(rewards)))
    batch = grpo_batch(roll, adv)
    batch.pop("truncated")

    # 2. log-probs under the reference and the old (sampling) policy.
    chunk = gcfg.logprob_chunk
    lp_args = (batch["tokens"], batch["completion_mask"])
    # One compiled program for both (what the jit cache would share), also giving its memory.
    logprobs = grpo.ref_logprobs_fn.lower(ref_params, cfg, *lp_args,
                                          **logprob_kwargs(gcfg)).compile()
    t_ref, ts_ref, ref_lp = timed(lambda: logprobs(ref_params, *lp_args), args.repeats)
    t_old, ts_old, _ = timed(lambda: logprobs(params, *lp_args), args.repeats)
    rows["log-probs: reference"] = dict(seconds=t_ref, all=ts_ref, tokens=B * T,
                                        flops=2 * n_params * B * T)
    rows["log-probs: old policy"] = dict(seconds=t_old, all=ts_old, tokens=B * T,
                                         flops=2 * n_params * B * T)
    memory["log-probs"] = peak_memory_bytes()
    mem_lp = memory_of(logprobs)

    # 3. update: policy forward + backward + AdamW, reference log-probs in the batch.
    batch["ref_logprobs"] = ref_lp
    tx = make_optimizer(lr, warmup_steps=0, total_steps=1000, schedule="constant")
    state = TrainState.create(params, tx)
    step = grpo.make_grpo_step(cfg, tx, gcfg).lower(state, None, batch).compile()
    mem_up = memory_of(step)
    holder = {"state": state}

    def update():
        holder["state"], metrics = step(holder["state"], None, batch)
        return metrics

    t_up, ts_up, metrics = timed(update, args.repeats)
    if not np.isfinite(float(metrics["loss"])):
        raise RuntimeError(f"non-finite loss {metrics['loss']}")
    rows["update"] = dict(seconds=t_up, all=ts_up, tokens=B * T, flops=6 * n_params * B * T)
    memory["update"] = peak_memory_bytes()

    total = rows["rollout"]["seconds"] + t_ref + t_old + t_up
    for r in rows.values():
        r["share"] = r["seconds"] / total
        r["mfu"] = r["flops"] / r["seconds"] / (peak_tflops * 1e12)
    dev = jax.devices()[0]
    info = {
        "setting": args.setting + (" (shrunk)" if args.shrink else ""),
        "device": f"{dev.platform}: {dev.device_kind}", "device_count": jax.device_count(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "jax": jax.__version__,
        "params": n_params, "dtype": cfg.compute_dtype, "n_layers": cfg.n_layers,
        "attention": cfg.attention, "remat": cfg.remat,
        "logprob_passes": grpo.logprob_passes(B, T, gcfg.logprob_micro_batch or None),
        "update_over_logprobs": t_up / statistics.mean([t_ref, t_old]),
        "P": P, "G": G, "B": B, "prompt_len": args.prompt_len, "new_tokens": M, "T": T,
        "grad_accum": gcfg.grad_accum, "logprob_chunk": chunk, "repeats": args.repeats,
        "peak_tflops": peak_tflops, "total_seconds": total,
        "memory_peak": {k: {"what": w, "bytes": b} for k, (w, b) in memory.items()},
        "compiled_memory": {"log-probs": mem_lp, "update": mem_up},
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]),
    }
    if args.setting != "tiny":
        leaked = [m for m in ("ml_collections", "seqio") if m in sys.modules]
        if leaked:
            raise RuntimeError(f"the {args.setting} path imported {leaked}")
    return {"info": info, "phases": rows}


def _gib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**30:.3f} GiB"


def memory_table(mem: dict) -> str:
    """Markdown rows of compiled_memory() results by program name."""
    lines = ["| compiled program | arguments | outputs | temporaries |", "|---|---|---|---|"]
    for name, m in mem.items():
        m = m or {}
        lines.append(f"| {name} | {_gib(m.get('argument'))} | {_gib(m.get('output'))} | "
                     f"{_gib(m.get('temp'))} |")
    return "\n".join(lines)


def markdown(res: dict) -> str:
    info, rows = res["info"], res["phases"]
    lines = [f"setting {info['setting']}: {info['device']}, jax {info['jax']}, "
             f"{info['params'] / 1e6:.1f}M params, {info['dtype']}, P={info['P']} x "
             f"G={info['G']} (B={info['B']}), prompt {info['prompt_len']}, "
             f"{info['new_tokens']} new tokens, T={info['T']}, grad_accum "
             f"{info['grad_accum']}, attention {info['attention']}, remat {info['remat']}, "
             f"log-probs in {info['logprob_passes'][0]} passes of "
             f"{info['logprob_passes'][1]} rows; median of {info['repeats']}; MFU against "
             f"{info['peak_tflops']:g} TFLOP/s",
             "",
             "| phase | median s | share | tokens | tokens/s | model TFLOP | MFU |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds']:.3f} | {100 * r['share']:.1f}% | "
                     f"{r['tokens']:,} | {r['tokens'] / r['seconds']:,.0f} | "
                     f"{r['flops'] / 1e12:.3f} | {100 * r['mfu']:.2f}% |")
    lines.append(f"| **one step** | {info['total_seconds']:.3f} | 100% | | | | |")
    lines += ["", f"update / log-prob pass (mean of the two): "
                  f"{info['update_over_logprobs']:.2f}x"]
    lines += ["", "| memory | after rollout | after log-probs | after update |",
              "|---|---|---|---|"]
    mp = info["memory_peak"]
    lines.append(f"| peak ({mp['rollout']['what']}) | {_gib(mp['rollout']['bytes'])} | "
                 f"{_gib(mp['log-probs']['bytes'])} | {_gib(mp['update']['bytes'])} |")
    return "\n".join(lines + ["", memory_table(info["compiled_memory"])])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_only:
        print(memory_only(args))
        return
    res = run(args)
    print(markdown(res))
    print(f"\ncommand: {res['info']['command']}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
