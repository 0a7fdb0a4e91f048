"""The shared pieces of the recipes: a config's problems, mesh and base model.

`base_model(c, workdir, ...)` is the base policy of a recipe config: a local Hugging Face folder
(`c.model.path`), or the tiny byte-level model pretrained on the synthetic base corpus into
`<workdir>/base` (resumed or reused when already there). `load_problems` gives a config's train
or test problems (generated, or from local JSONL); `make_mesh` its device mesh.

The config is any object with the fields of `configs/r1_zero.py` (`model`, `task`, `pretrain`,
`mesh`, `seed`).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from r1jax import model, sharding, tasks, train
from r1jax.reporting import MetricWriter
from r1jax.tokenizer import ByteTokenizer


def style_mix(c) -> dict[str, float]:
    return {s: float(c.pretrain[f"style_{s}"]) for s in tasks.STYLES}


def difficulty(c) -> dict:
    if c.task.name == "arithmetic":
        return {"num_ops": tuple(c.task.num_ops), "digits": tuple(c.task.digits),
                "ops": c.task.ops, "order": c.task.order}
    return {}


def load_problems(c, split: str, n: int, seed: int) -> list[tasks.Problem]:
    """Problems of the configured task: synthetic (generated) or from local JSONL."""
    if c.task.name in tasks.TASK_NAMES:
        return tasks.generate(c.task.name, seed, n, split=split, **difficulty(c))
    from r1jax import data
    path = c.task.train_path if split == "train" else c.task.test_path
    if not path:
        raise ValueError(f"task {c.task.name!r} needs config.task.{split}_path (a JSONL file)")
    checker = c.task.get("checker", "builtin")
    problems = data.load_jsonl(path, c.task.name, checker=checker).problems
    return problems[:n] if n else problems


def make_mesh(c):
    """The device mesh of `config.mesh`, or None for a single device (plain jit)."""
    sizes = dict(c.mesh)
    devices = None
    if -1 not in sizes.values():
        n = int(np.prod(list(sizes.values())))
        if n == 1:
            return None
        devices = jax.devices()[:n]
    return sharding.make_mesh(sizes, devices)


def corpus(c) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs of the tiny base's pretraining: the base corpus, and with
    `pretrain.style_fewshot` > 0 (absent: 0) that share of multi-example
    documents (`tasks.few_shot_documents`) in place of the corpus's last examples."""
    n = c.pretrain.num_examples
    n_docs = int(round(n * c.pretrain.get("style_fewshot", 0.0)))
    pairs = tasks.base_corpus(c.seed, n - n_docs, {c.task.name: 1.0}, style_mix(c),
                              template=c.task.template,
                              difficulty={c.task.name: difficulty(c)})
    if n_docs:
        pairs += tasks.few_shot_documents(c.seed, n_docs, c.pretrain.fewshot_max_examples,
                                          {c.task.name: 1.0},
                                          difficulty={c.task.name: difficulty(c)})
    return pairs


def base_model(c, workdir: str, writer: MetricWriter, show_progress: bool = True, mesh=None):
    """(model cfg, tokenizer, params) of the base policy: HF folder or pretrained tiny model."""
    if c.model.path:
        from r1jax import hf
        from r1jax.tokenizer import HFTokenizer
        cfg, params = hf.load_hf(c.model.path, mesh=mesh)
        cfg = cfg.replace(compute_dtype=c.model.compute_dtype, remat=c.model.remat)
        return cfg, HFTokenizer(c.model.path), params
    tok = ByteTokenizer()
    cfg = model.ModelConfig.preset(c.model.preset, compute_dtype=c.model.compute_dtype,
                                   remat=c.model.remat)
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"model vocab_size {cfg.vocab_size} < tokenizer's {tok.vocab_size}")
    if mesh is None:
        params = model.init_params(cfg, jax.random.key(c.seed))
    else:  # computed directly into its layout: no whole copy on one device
        params, _ = sharding.init_params_sharded(cfg, jax.random.key(c.seed), mesh)
    pairs = corpus(c)
    tokens, mask = train.encode_pairs(tok, pairs, c.pretrain.seq_len)
    loop = train.LoopConfig(steps=c.pretrain.steps, learning_rate=c.pretrain.learning_rate,
                            warmup_steps=c.pretrain.warmup_steps,
                            weight_decay=c.pretrain.weight_decay,
                            checkpoint_every=max(c.pretrain.steps // 4, 1), seed=c.seed)
    params = train.run_sft(params, cfg, tokens, mask, loop, os.path.join(workdir, "base"),
                           batch_size=c.pretrain.batch_size, stage="pretrain", writer=writer,
                           mesh=mesh, show_progress=show_progress,
                           length_bucket=c.pretrain.get("length_bucket", 0))
    return cfg, tok, params
