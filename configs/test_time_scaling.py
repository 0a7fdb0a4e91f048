"""Test-time scaling: accuracy against generated tokens for every search method.

`python experiments/test_time_scaling.py --config configs/test_time_scaling.py:VARIANT
 --workdir runs/tts`

Variants:
  tiny          a tiny byte-level base model pretrained as configs/r1_zero.py:tiny's was when
                the results were measured (pinned below), but on sums worked in any order of
                the terms (into <workdir>/base, or reused from --config.base_workdir), an ORM
                and a PRM trained on its own samples (configs/verifier.py:tiny), held-out
                synthetic sums, sampling at T = 0.5.
  qwen2.5-0.5b  a local Hugging Face policy (--config.model.path) on GSM8K-style JSONL
                (--config.task.train_path / test_path); the ORM and PRM are value heads over a
                copy of the policy trunk trained on its samples (or --config.verifier.trunk_path
                for another local HF folder with the same tokenizer).
Any field can be overridden, e.g. --config.tts.budgets='(1, 4, 16)'.
"""
import importlib.util
import os

import ml_collections


def _sibling(name: str):
    """A config file next to this one (configs/ is not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"r1jax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    base = {"tiny": "tiny", "qwen2.5-0.5b": "qwen2.5-0.5b"}
    if variant not in base:
        raise ValueError(f"unknown test_time_scaling variant {variant!r}; known: {sorted(base)}")
    # Model, task and base pretraining fields are r1_zero's (grpo/eval/mesh are unused here).
    c = _sibling("r1_zero").get_config(base[variant])
    c.unlock()
    c.variant = variant
    c.base_workdir = ""               # a workdir whose base/ holds the pretrained tiny model
                                      # (an earlier run of this variant; read as it is, so it
                                      # must match model/task/pretrain); "" = pretrain in
                                      # <workdir>
    c.verifier = _sibling("verifier").get_config(variant)
    c.verifier.trunk_path = ""        # HF folder for the verifier trunk; "" = copy of the policy

    c.tts = ml_collections.ConfigDict()
    c.tts.seed = 0                    # seeds everything after the base model (problems,
                                      # samples, verifiers, search); c.seed seeds the base
    c.tts.num_problems = 100          # held-out (test split) problems; the 95% Wilson interval
                                      # half-width is <= 0.098 at 100
    c.tts.budgets = (1, 2, 4, 8, 16, 32, 64)   # N for majority vote and (weighted) BoN: N
                                      # samples subsampled from max(budgets) drawn once
    c.tts.search_budgets = (4, 16)    # N for beam search, DVTS and MCTS (each N is a new run)
    c.tts.temperature = 1.0           # sampling temperature of every method but greedy
    c.tts.max_new_tokens = 96         # tokens per whole solution
    c.tts.step_max_new_tokens = 48    # tokens per reasoning step (tree search)
    c.tts.max_steps = 8               # reasoning steps per solution (tree search)
    c.tts.aggregation = "min"         # PRM step scores -> solution score: min | prod | last
    c.tts.beam_expansions = 4         # at budget N, M = min(this, N // 2) next steps per node:
                                      # beam search keeps N / M beams, each expanded M ways;
                                      # DVTS runs N / M subtrees of M expansions (N / M >= 2,
                                      # so the two differ at every N >= 4)
    c.tts.lookahead = 0               # beam search / DVTS lookahead steps
    c.tts.mcts_expansions = 2         # next steps sampled at each MCTS expansion
    c.tts.mcts_c = 1.0                # exploration constant
    c.tts.mcts_rule = "puct"          # puct | uct
    c.tts.mcts_final = "value"        # value: best rollout seen | visits: most visited path
    c.tts.mcts_value = "prm"          # value of a rollout: prm | orm
    c.tts.batch_rows = 2048           # sampled rows (prompts x samples) per generate call
    c.tts.cache_bytes = 1 << 30       # tree search: KV cache of earlier steps kept (bytes) so
                                      # that kept prefixes are continued, never prefilled again
    c.tts.score_batch = 64            # rows per verifier forward pass

    if variant == "tiny":
        # r1_zero's tiny pretraining, except that the worked solutions add the terms in any
        # order: each problem has many correct reasoning paths (self-consistency's premise).
        # Greedy decoding follows one path; samples follow many, and their errors differ.
        c.task.order = "any"
        # The pretraining of the published results (RESULTS.md), pinned here: r1_zero's tiny
        # base since moved to a guess-mode corpus that does not change this experiment's base.
        c.pretrain.steps = 600
        c.pretrain.seq_len = 128
        c.pretrain.style_careful = 0.3
        c.pretrain.style_flawed = 0.2
        c.pretrain.style_guess = 0.25
        c.pretrain.style_unformatted = 0.15
        c.pretrain.style_mixed_language = 0.1
        c.tts.temperature = 0.5
        c.tts.num_problems = 200      # Wilson half-width <= 0.07; paired differences tighter
        c.tts.budgets = (1, 2, 4, 8, 16, 32)
        c.tts.search_budgets = (4, 8)
    elif variant == "qwen2.5-0.5b":
        c.task.template = "r1_zero"
        c.tts.num_problems = 500
        c.tts.search_budgets = (4, 16, 64)
        c.tts.max_new_tokens = 512
        c.tts.step_max_new_tokens = 256
        c.tts.max_steps = 16
        c.tts.batch_rows = 128
        c.tts.score_batch = 16
    c.lock()
    return c
