"""STaR (Zelikman et al. 2022): the model's own rationales that reach the right answer, the
failures rationalized with the answer as a hint, fine-tuning the base on them, repeated.

Variants (`--config configs/star.py:VARIANT`):
  tiny          the R1-Zero tiny base (`configs/r1_zero.py:tiny`'s model, task and pretraining,
                so `<workdir>/base` can be copied from an R1-Zero run), prompted with the short
                R1-Zero template; 2 CPU cores, minutes.
  qwen2.5-0.5b  a local Hugging Face folder (--config.model.path) and GSM8K-style JSONL
                (--config.task.train_path / test_path), few-shot prompted (4 train rationales).
Any field can be overridden: --config.star.rationalize=False --config.star.iterations=5.
"""
import importlib.util
import os

import ml_collections


def _r1_zero_config(variant: str) -> ml_collections.ConfigDict:
    """`configs/r1_zero.py:get_config(variant)`: its model, task and base pretraining are
    STaR's, so the two recipes share one base."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_zero.py")
    spec = importlib.util.spec_from_file_location("r1_zero_config_for_star", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "qwen2.5-0.5b"):
        raise ValueError(f"unknown star variant {variant!r}; known: tiny, qwen2.5-0.5b")
    base = _r1_zero_config(variant)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.model = ml_collections.ConfigDict(base.model.to_dict())
    c.task = ml_collections.ConfigDict(base.task.to_dict())
    c.pretrain = ml_collections.ConfigDict(base.pretrain.to_dict())
    c.mesh = ml_collections.ConfigDict(base.mesh.to_dict())

    c.star = ml_collections.ConfigDict()
    c.star.iterations = 3             # K: fine-tuned policies after the base (iteration 0)
    c.star.num_train_problems = 256   # the same train problems in every iteration
    c.star.samples_per_problem = 4    # rationales sampled per problem (and per hinted prompt)
    c.star.temperature = 1.0
    c.star.few_shot_k = 0             # worked train examples in front of each generation prompt
                                      # (0: the template alone; the tiny base saw no few-shot
                                      # documents)
    c.star.rationalize = True         # hinted second attempt at the problems not solved
    c.star.ablation = True            # also run the loop without rationalization
    # The hinted question of a rationalization prompt; the hint is never stored: kept
    # rationales are trained on the plain prompt. (On the tiny base "{question}={answer}" is
    # the hinted form its samples still complete best; RESULTS.md.)
    c.star.hint = "{question}={answer}"
    c.star.keep_per_problem = 1       # distinct correct rationales kept per problem
    c.star.steps = 40                 # fine-tuning steps of iteration 1 (the paper: 40)
    c.star.step_growth = 1.2          # x this per iteration (the paper: +20%)
    c.star.learning_rate = 1e-3
    c.star.warmup_steps = 5
    c.star.batch_size = 32
    c.star.max_new_tokens = 96

    c.eval = ml_collections.ConfigDict()
    c.eval.num_problems = 200         # held-out problems, the same for every iteration
    c.eval.num_samples = 4            # sampled completions per problem (plus one greedy)
    c.eval.temperature = 1.0

    c.checkpoint_every = 50
    c.keep_checkpoints = 1

    if variant == "qwen2.5-0.5b":
        c.star.num_train_problems = 2000
        c.star.samples_per_problem = 1
        c.star.few_shot_k = 4
        c.star.hint = "{question} (The answer is {answer}.)"
        c.star.learning_rate = 1e-5
        c.star.batch_size = 8
        c.star.max_new_tokens = 384
        c.eval.num_problems = 500
        c.eval.num_samples = 1
    c.lock()
    return c
