"""Distillation of a reasoning teacher into a smaller student (sequence-level, token-level and
on-policy), against GRPO on the student with the same rule rewards.

Variants (`--config configs/distill.py:VARIANT`):
  tiny                  teacher: the policy of an R1-Zero tiny run (--config.teacher.r1_zero_workdir,
                        its grpo/ checkpoint); student: the "micro" preset (0.17M parameters, the
                        same byte tokenizer) pretrained on the R1-Zero tiny corpus into
                        <workdir>/base; 2 CPU cores, minutes.
  qwen2.5-1.5b-to-0.5b  local Hugging Face folders sharing a tokenizer (--config.teacher.path,
                        --config.model.path) and GSM8K-style JSONL (--config.task.train_path /
                        test_path), bf16, mesh from --config.mesh.*.
Any field can be overridden: --config.methods='("student_base","on_policy")'
--config.on_policy.loss=jsd --config.on_policy.beta=0.5.
"""
import importlib.util
import os

import ml_collections

METHODS = ("student_base", "grpo", "sequence", "token", "on_policy", "teacher")


def _r1_zero_config(variant: str) -> ml_collections.ConfigDict:
    """`configs/r1_zero.py:get_config(variant)`: its task and base corpus are the student's."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_zero.py")
    spec = importlib.util.spec_from_file_location("r1_zero_config_for_distill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "qwen2.5-1.5b-to-0.5b"):
        raise ValueError(f"unknown distill variant {variant!r}; known: tiny, "
                         "qwen2.5-1.5b-to-0.5b")
    base = _r1_zero_config("tiny" if variant == "tiny" else "qwen2.5-0.5b")
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.methods = METHODS               # which of METHODS to run (student_base always is)

    # The student: a preset pretrained on the base corpus, or a local HF folder.
    c.model = ml_collections.ConfigDict(base.model.to_dict())
    c.model.preset = "micro"
    c.task = ml_collections.ConfigDict(base.task.to_dict())
    c.pretrain = ml_collections.ConfigDict(base.pretrain.to_dict())   # the student's base
    c.pretrain.learning_rate = 1e-2   # a 0.17M model takes the larger rate
    c.mesh = ml_collections.ConfigDict(base.mesh.to_dict())

    c.teacher = ml_collections.ConfigDict()
    c.teacher.r1_zero_workdir = ""    # tiny: an R1-Zero tiny run's workdir (its grpo/ policy)
    c.teacher.path = ""               # real: a local HF folder with the student's tokenizer

    # Teacher samples on train problems: all of them for token-level distillation, the ones
    # the rule rewards accept (correct and formatted) for sequence-level (rejection sampling).
    c.samples = ml_collections.ConfigDict()
    c.samples.num_problems = 256
    c.samples.per_problem = 4
    c.samples.temperature = 1.0
    c.samples.keep_per_problem = 2    # sequence-level: distinct accepted samples per problem
    c.samples.max_new_tokens = 96
    c.samples.max_prompt_tokens = 32  # sequences are packed to this + max_new_tokens

    c.sequence = ml_collections.ConfigDict()   # SFT on the accepted teacher samples
    c.sequence.steps = 120
    c.sequence.batch_size = 32
    c.sequence.learning_rate = 3e-3
    c.sequence.warmup_steps = 10

    c.token = ml_collections.ConfigDict()      # forward KL on all teacher samples
    c.token.steps = 120
    c.token.batch_size = 32
    c.token.learning_rate = 3e-3
    c.token.warmup_steps = 10
    c.token.temperature = 1.0         # tau of both distributions
    c.token.alpha = 1.0               # weight of the KL against the hard-label loss
    c.token.chunk = 128               # positions per LM-head block

    c.on_policy = ml_collections.ConfigDict()  # student samples, teacher scores (reverse KL)
    c.on_policy.steps = 60
    c.on_policy.prompts_per_step = 16
    c.on_policy.num_generations = 2
    c.on_policy.learning_rate = 3e-3
    c.on_policy.warmup_steps = 5
    c.on_policy.loss = "reverse"      # | jsd (generalised JSD) | forward
    c.on_policy.beta = 0.5            # jsd interpolation: 0 forward KL, 1 reverse KL
    c.on_policy.temperature = 1.0     # tau of the divergence
    c.on_policy.sample_temperature = 1.0
    c.on_policy.chunk = 128

    # The baseline: GRPO on the student base with the same rule rewards (as configs/r1_zero.py).
    c.grpo = ml_collections.ConfigDict()
    for k in ("steps", "prompts_per_step", "num_generations", "beta", "epsilon_low",
              "epsilon_high", "learning_rate", "warmup_steps", "temperature", "accuracy_weight",
              "format_weight", "grad_accum"):
        c.grpo[k] = base.grpo[k]
    c.grpo.learning_rate = 1e-3       # the smaller student takes a larger rate than tiny's

    c.eval = ml_collections.ConfigDict()
    c.eval.num_problems = 100         # held-out problems, the same for every method
    c.eval.num_samples = 8            # per problem at eval.temperature, plus one greedy
    c.eval.temperature = 1.0
    c.eval.curve_points = 4           # greedy evaluations during each training (the
                                      # accuracy-versus-FLOPs curves), besides start and end

    c.checkpoint_every = 50
    c.keep_checkpoints = 2

    if variant == "qwen2.5-1.5b-to-0.5b":
        c.model.preset = "qwen2.5-0.5b"
        c.pretrain.steps = 0
        c.samples.num_problems = 1024
        c.samples.max_new_tokens = 512
        c.samples.max_prompt_tokens = 256
        for section in ("sequence", "token"):
            c[section].steps = 400
            c[section].batch_size = 64
            c[section].learning_rate = 1e-5
        c.on_policy.steps = 200
        c.on_policy.prompts_per_step = 32
        c.on_policy.num_generations = 4
        c.on_policy.learning_rate = 1e-5
        c.grpo.steps = 400
        c.grpo.learning_rate = 1e-6
        c.eval.num_problems = 200
        c.eval.num_samples = 1
    c.lock()
    return c
