"""Prompting, measured: one base model under each prompt style (direct answer, zero-shot "Let's
think step by step", few-shot chain of thought with k worked examples, the R1-Zero template),
greedy and sampled, on the same held-out problems.

Variants (`--config configs/prompting.py:VARIANT`):
  tiny          the R1-Zero tiny base itself (copy an R1-Zero run's `base/` into the workdir
                to reuse it): a corpus of single examples, no multi-example documents.
  tiny_fewshot  the R1-Zero tiny model and task, its base pretrained on the R1-Zero corpus with
                a quarter of it replaced by documents of 1-5 examples in a row
                (`pretrain.style_fewshot`), so that in-context effects are possible;
                batches drawn by length (`pretrain.length_bucket`) keep its pretraining
                about 1.3x the R1-Zero base's (RESULTS.md: 4-5 minutes on 2 cores).
  qwen2.5-0.5b  a local Hugging Face folder (--config.model.path) and GSM8K-style JSONL
                (--config.task.train_path for the worked examples, --config.task.test_path).
"""
import importlib.util
import os

import ml_collections


def _r1_zero_config(variant: str) -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_zero.py")
    spec = importlib.util.spec_from_file_location("r1_zero_config_for_prompting", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "tiny_fewshot", "qwen2.5-0.5b"):
        raise ValueError(f"unknown prompting variant {variant!r}; known: tiny, tiny_fewshot, "
                         "qwen2.5-0.5b")
    base = _r1_zero_config("tiny" if variant.startswith("tiny") else variant)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    for section in ("model", "task", "pretrain", "mesh"):
        c[section] = ml_collections.ConfigDict(base[section].to_dict())

    c.prompting = ml_collections.ConfigDict()
    # direct | zero_shot_cot | few_shot_<k> | r1_zero (the task's R1-Zero template)
    c.prompting.styles = ("direct", "zero_shot_cot", "few_shot_1", "few_shot_2", "few_shot_4",
                          "r1_zero")
    c.prompting.max_new_tokens = 96

    c.eval = ml_collections.ConfigDict()
    c.eval.num_problems = 200
    c.eval.num_samples = 4            # sampled completions per problem (plus one greedy)
    c.eval.temperature = 1.0

    if variant == "tiny_fewshot":
        c.pretrain.style_fewshot = 0.25
        c.pretrain.seq_len = 528      # documents of up to 5 examples (the longest: 517 tokens)
        c.pretrain.length_bucket = 128  # batches of one length group: short rows stay short
    elif variant == "qwen2.5-0.5b":
        c.prompting.max_new_tokens = 384
        c.eval.num_problems = 500
    c.lock()
    return c
