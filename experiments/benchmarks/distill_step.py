"""Memory of one distillation update (r1jax.distill) at real shapes, from abstract shapes.

The update is compiled, never run: the student's TrainState (bf16 parameters, AdamW state) and
the teacher's parameters are `jax.eval_shape` results, so a CPU machine sizes a device's step
(`memory_analysis()` of the compiled program: arguments, outputs, temporaries). Default: a
qwen2.5-1.5b teacher into a qwen2.5-0.5b student (vocabulary 151,936), 64 rows of 768 tokens
in --grad_accum micro-batches, the on-policy loss (reverse KL). --shrink keeps the presets'
structure at toy widths (CPU, seconds). Imports neither ml_collections nor seqio (so it runs on
a bare GPU image).

  python experiments/benchmarks/distill_step.py --out distill_step.json
  python experiments/benchmarks/distill_step.py --shrink
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from r1jax import distill, model  # noqa: E402
from r1jax.train_state import TrainState, make_optimizer  # noqa: E402

GIB = 2 ** 30


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="qwen2.5-1.5b")
    p.add_argument("--student", default="qwen2.5-0.5b")
    p.add_argument("--rows", type=int, default=64, help="sequences per update")
    p.add_argument("--seq_len", type=int, default=768)
    p.add_argument("--grad_accum", type=int, default=4)
    p.add_argument("--loss", default="reverse", choices=distill.LOSSES)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--shrink", action="store_true", help="toy widths, same structure (CPU)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    return p.parse_args(argv)


def shapes(args):
    t_cfg, s_cfg = model.ModelConfig.preset(args.teacher), model.ModelConfig.preset(args.student)
    if args.shrink:
        t_cfg = t_cfg.replace(n_layers=2, d_model=192, d_ff=384, vocab_size=1024,
                              attention_block=16, mlp_chunk=64)
        s_cfg = s_cfg.replace(n_layers=2, d_model=128, d_ff=256, vocab_size=1024,
                              attention_block=16, mlp_chunk=64)
        args.rows, args.seq_len, args.grad_accum = 4, 64, 2
    return t_cfg, s_cfg


def measure(args) -> dict:
    t_cfg, s_cfg = shapes(args)
    tx = make_optimizer(1e-5, total_steps=1000, schedule="constant")
    state = jax.eval_shape(lambda: TrainState.create(
        model.init_params(s_cfg, jax.random.key(0)), tx))
    teacher = jax.eval_shape(lambda: model.init_params(t_cfg, jax.random.key(1)))
    B, T = args.rows, args.seq_len
    batch = {"tokens": jax.ShapeDtypeStruct((B, T), jnp.int32),
             "completion_mask": jax.ShapeDtypeStruct((B, T - 1), jnp.float32)}
    dcfg = distill.DistillConfig(loss=args.loss, chunk=args.chunk, grad_accum=args.grad_accum)
    step = distill.make_distill_step(s_cfg, t_cfg, tx, dcfg)
    compiled = step.lower(state, teacher, batch).compile()
    try:
        m = compiled.memory_analysis()
        mem = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
               for k in ("argument", "output", "temp", "generated_code")}
    except Exception:   # a backend without memory_analysis
        mem = None
    out = {"teacher": args.teacher, "student": args.student, "shrink": args.shrink,
           "teacher_params": t_cfg.num_params(), "student_params": s_cfg.num_params(),
           "rows": B, "seq_len": T, "grad_accum": args.grad_accum, "loss": args.loss,
           "chunk": args.chunk, "platform": jax.devices()[0].platform, "memory_bytes": mem}
    if mem:
        out["peak_estimate_gib"] = round((mem["argument"] + mem["output"] + mem["temp"]) / GIB,
                                         2)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = measure(args)
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
