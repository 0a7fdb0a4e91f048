"""The first-device suite: decode and the GRPO step at Qwen2.5 shapes, one table, <= 8 minutes.

On one H100 / H200 (jax with CUDA, torch, transformers; no ml_collections, seqio or grain):
  python experiments/benchmarks/gpu_suite.py --out runs/gpu_suite.json
runs, each in its own process (so that each gets the device's memory to itself) and under its
share of a --budget of 480 s:
  1. attention check: the model's logits and gradients (bf16, head_dim 64, 2 layers) with
     attention "chunked" and "dot_product" (cuDNN flash attention where it takes the call:
     what "auto" resolves to on a GPU) against "xla", and whether cuDNN is in the compiled
     program. The later runs use --attention auto when both agree, "chunked" when only
     "dot_product" failed or disagreed, "xla" when "chunked" did too (the table says which).
  2. `grpo_step.py --setting qwen2.5-0.5b`: rollout / log-probs / update times, MFU, peak
     device memory (256 rows of 256 + 512 tokens).
  3. `decode.py` at qwen2.5-0.5b and 4. qwen2.5-1.5b shapes: bf16, prompt 128, 256 new tokens,
     batch 1 / 64 / 256, r1jax and transformers side by side, greedy agreement, fraction of
     the bandwidth bound.
A run that overruns its share is stopped and reported as such; the table prints regardless.

--smoke runs the same steps on the CPU at toy sizes (the attention check in float32, the
GRPO step's --shrink, one decode run of the tiny preset), which is what
tests/test_benchmarks.py does.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# (step, share of the budget): the order they run in.
SHARES = {"attention": 0.10, "grpo": 0.40, "decode qwen2.5-0.5b": 0.25,
          "decode qwen2.5-1.5b": 0.25}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="CPU, toy sizes: checks that every step runs (the test suite)")
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for the whole suite, shared out as in SHARES")
    p.add_argument("--only", nargs="+", choices=list(SHARES), default=None,
                   help="run only these steps")
    p.add_argument("--out", default=None, help="also write everything as JSON here")
    p.add_argument("--check_attention", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- step 1

def check_attention(smoke: bool) -> dict:
    """Forward + gradient of a 2-layer bf16 model under each attention implementation,
    against "xla" (run inside the child process)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, REPO)
    from r1jax import model

    cfg = model.ModelConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                            head_dim=64, d_ff=512, param_dtype="bfloat16",
                            compute_dtype="float32" if smoke else "bfloat16")
    params = model.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 64 if smoke else 256), 0,
                                cfg.vocab_size)

    def run(attention):
        c = cfg.replace(attention=attention)

        def loss(p):
            logits = model.forward(p, tokens, c)
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1)), logits

        compiled = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params).compile()
        (_, logits), grads = compiled(params)
        return logits, grads, "cudnn" in compiled.as_text().lower()

    out = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
           "jax": jax.__version__,
           "auto_resolves_to": model.attention_impl(cfg, True, cfg.dtype), "impls": {}}
    ref_logits, ref_grads, _ = run("xla")
    for attention in ("chunked", "dot_product"):
        try:
            logits, grads, cudnn = run(attention)
        except Exception as e:  # noqa: BLE001 -- reported, and the suite falls back
            out["impls"][attention] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        scale = float(jnp.max(jnp.abs(ref_logits)))
        gdiff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                    / max(float(jnp.max(jnp.abs(b.astype(jnp.float32)))), 1e-12)
                    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
        out["impls"][attention] = {
            "logits_max_abs_diff": float(np.max(np.abs(np.asarray(logits - ref_logits)))),
            "logits_scale": scale, "grads_max_rel_diff": gdiff, "cudnn_in_hlo": cudnn}
    return out


def _agrees(r: dict) -> bool:
    return bool(r) and "error" not in r and (
        r["logits_max_abs_diff"] <= 0.05 * max(r["logits_scale"], 1.0)
        and r["grads_max_rel_diff"] <= 0.1)                           # bf16 tolerances


def attention_choice(res: dict | None) -> str:
    """--attention for the later runs: "auto" when "dot_product" (what "auto" uses on a GPU)
    and "chunked" agree with "xla", else the first of "chunked", "xla" that is safe."""
    impls = (res or {}).get("impls", {})
    if not _agrees(impls.get("chunked", {})):
        return "xla"
    return "auto" if _agrees(impls.get("dot_product", {})) else "chunked"


# ----------------------------------------------------------------------------- running steps

def run_step(name: str, cmd: list[str], timeout: float, env: dict) -> dict:
    """Runs one step's command; {"seconds", "rc", "tail"} plus "timeout" when it overran."""
    t = time.perf_counter()
    print(f"[suite] {name}: {' '.join(cmd[1:])} (limit {timeout:.0f} s)", flush=True)
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, timeout=max(timeout, 1.0),
                           capture_output=True, text=True)
        rc, text, timed_out = p.returncode, p.stdout + p.stderr, False
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, text, timed_out = None, out, True
    res = {"seconds": time.perf_counter() - t, "rc": rc, "timeout": timed_out,
           "tail": text[-3000:]}
    status = "timed out" if timed_out else f"rc {rc}"
    print(f"[suite] {name}: {status} after {res['seconds']:.0f} s", flush=True)
    if rc not in (0, None):
        print(text[-3000:], flush=True)
    return res


def commands(args, attention: str, tmp: str) -> dict[str, list[str]]:
    py = sys.executable
    bench = lambda f: os.path.join(HERE, f)  # noqa: E731
    if args.smoke:
        grpo_args = ["--setting", "qwen2.5-0.5b", "--shrink", "--repeats", "1"]
        dec = ["--device", "cpu", "--dtype", "bfloat16", "--prompt-len", "8", "--new-tokens",
               "8", "--batch", "1", "2", "--repeats", "1"]
        dec_presets = {"decode qwen2.5-0.5b": "tiny"}     # one toy shape stands for both
    else:
        grpo_args = ["--setting", "qwen2.5-0.5b", "--repeats", "2"]
        dec = ["--device", "gpu", "--dtype", "bfloat16", "--prompt-len", "128",
               "--new-tokens", "256", "--batch", "1", "64", "256", "--repeats", "1"]
        dec_presets = {"decode qwen2.5-0.5b": "qwen2.5-0.5b",
                       "decode qwen2.5-1.5b": "qwen2.5-1.5b"}
    cmds = {"attention": [py, os.path.abspath(__file__), "--check_attention"]
            + (["--smoke"] if args.smoke else []),
            "grpo": [py, bench("grpo_step.py"), *grpo_args, "--attention", attention,
                     "--out", os.path.join(tmp, "grpo.json")]}
    for name, preset in dec_presets.items():
        out = os.path.join(tmp, name.replace(" ", "_") + ".json")
        cmds[name] = [py, bench("decode.py"), *dec, "--preset", preset, "--attention",
                      attention, "--out", out]
    return cmds


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the table

def _gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.1f} GiB"


def table(results: dict) -> str:
    """One markdown table of every step's numbers (or why a step has none)."""
    lines = ["| run | shape | r1jax | transformers | r1jax / HF | bound or MFU | memory | check |",
             "|---|---|---|---|---|---|---|---|"]
    att = results.get("attention", {})
    a = att.get("data")
    if a:
        for name, r in a["impls"].items():
            check = r.get("error") or (f"logits Δ {r['logits_max_abs_diff']:.3g} of "
                                       f"{r['logits_scale']:.3g}, grads rel Δ "
                                       f"{r['grads_max_rel_diff']:.3g}"
                                       + (", cuDNN" if r["cudnn_in_hlo"] else ""))
            lines.append(f"| attention {name} vs xla | 2 layers, {a['backend']} | | | | | | "
                         f"{check} |")
        lines.append(f"| attention used below | | {results.get('attention_used')} | | | | | "
                     f"auto -> {a['auto_resolves_to']} |")
    elif att:
        lines.append(f"| attention check | | | | | | | {_failed(att)} |")
    g = results.get("grpo", {})
    gd = g.get("data")
    if gd:
        info = gd["info"]
        shape = (f"B={info['B']} ({info['P']}x{info['G']}), T={info['T']}, "
                 f"grad_accum {info['grad_accum']}")
        mem = info["memory_peak"]
        mem_of = {"rollout": "rollout", "log-probs: reference": "log-probs",
                  "log-probs: old policy": "log-probs", "update": "update"}
        for phase, r in gd["phases"].items():
            lines.append(f"| GRPO {phase} | {shape} | {r['seconds']:.3f} s "
                         f"({100 * r['share']:.0f}%) | | | MFU {100 * r['mfu']:.1f}% | "
                         f"{_gib(mem[mem_of[phase]]['bytes'])} peak | "
                         f"{r['tokens'] / r['seconds']:,.0f} tok/s |")
        lines.append(f"| GRPO one step | {shape} | {info['total_seconds']:.3f} s | | | | | "
                     f"{info['device']} |")
    elif g:
        lines.append(f"| GRPO step | | | | | | | {_failed(g)} |")
    for name in (n for n in SHARES if n.startswith("decode")):
        d = results.get(name, {})
        dd = d.get("data")
        if not dd:
            if d:
                lines.append(f"| {name} | | | | | | | {_failed(d)} |")
            continue
        info = dd["info"]
        for r in dd["results"]:
            shape = (f"batch {r['batch']}, {info['prompt_len']} + {info['new_tokens']}, "
                     f"{info['dtype']}")
            hf = f"{r['hf_tok_s']:,.0f} tok/s" if "hf_tok_s" in r else "-"
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
            bound = f"{r['r1jax_frac_bound']:.2f}" + (
                f" / {r['hf_frac_bound']:.2f}" if "hf_frac_bound" in r else "")
            agree = (f"greedy rows agree {100 * r['greedy_rows_agree_16']:.0f}%"
                     if "greedy_rows_agree_16" in r else "")
            lines.append(f"| {name} | {shape} | {r['r1jax_tok_s']:,.0f} tok/s | {hf} | "
                         f"{ratio} | {bound} of bound | | {agree} |")
    return "\n".join(lines)


def _failed(step: dict) -> str:
    if step.get("skipped"):
        return "skipped: " + step["skipped"]
    if step.get("timeout"):
        return f"timed out after {step['seconds']:.0f} s"
    return f"failed (rc {step.get('rc')}); see the log above"


# ----------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.check_attention:
        if args.smoke:
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        print(json.dumps(check_attention(args.smoke)))
        return {}
    env = dict(os.environ)
    if args.smoke:
        env["JAX_PLATFORMS"] = "cpu"
    steps = args.only or list(SHARES)
    start = time.perf_counter()
    results: dict = {"attention_used": "auto"}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = None
        for name in SHARES:
            if name not in steps:
                continue
            # Each step may use its own share plus whatever earlier steps left unused.
            used = time.perf_counter() - start
            later = sum(SHARES[n] for n in SHARES if n in steps and
                        list(SHARES).index(n) > list(SHARES).index(name))
            limit = args.budget - used - later * args.budget
            if limit < 5:
                results[name] = {"skipped": "no time left in the budget"}
                continue
            cmds = commands(args, results["attention_used"], tmp)
            if name not in cmds:
                results[name] = {"skipped": "--smoke runs one decode shape"}
                continue
            res = run_step(name, cmds[name], limit, env)
            if name == "attention":
                lines = [ln for ln in res["tail"].splitlines() if ln.startswith("{")]
                res["data"] = json.loads(lines[-1]) if lines and res["rc"] == 0 else None
                results["attention_used"] = attention_choice(res["data"])
            else:
                out = cmds[name][cmds[name].index("--out") + 1]
                res["data"] = _read(out) if res["rc"] == 0 else None
            results[name] = res
    results["total_seconds"] = time.perf_counter() - start
    print()
    print(table(results))
    print(f"\nsuite: {results['total_seconds']:.0f} s of a {args.budget:.0f} s budget; "
          f"python {sys.version.split()[0]}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
