"""DeepSeek-R1-Zero: GRPO with rule-based rewards (accuracy + format) from a base model.

Variants (`--config configs/r1_zero.py:VARIANT`):
  tiny          pretrain a tiny byte-level base model on the synthetic corpus (cached in the
                workdir), then GRPO on held-out-disjoint arithmetic; 2 CPU cores, minutes.
  qwen2.5-0.5b  a local Hugging Face folder (--config.model.path) and GSM8K-style JSONL
  qwen2.5-1.5b  (--config.task.train_path / test_path), bf16, mesh from --config.mesh.*.
Any field can be overridden: --config.grpo.beta=0.0 --config.grpo.aggregation=token_mean.
"""
import ml_collections


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"           # r1jax.ModelConfig.preset name (ignored with a path)
    c.model.path = ""                 # local HF folder: config.json, *.safetensors, tokenizer.json
    c.model.compute_dtype = "float32"
    c.model.remat = False             # recompute blocks in the backward pass (saves memory)

    c.task = ml_collections.ConfigDict()
    c.task.name = "arithmetic"        # synthetic: arithmetic | countdown | shortest_path; or gsm8k
    c.task.template = "r1_zero_short" # r1jax.prompts.TEMPLATES key
    c.task.num_ops = (2, 3)           # arithmetic difficulty: operations per problem
    c.task.digits = (1, 1)            # arithmetic difficulty: digits per number
    c.task.ops = "+"                  # arithmetic operators (a subset of "+-*")
    c.task.order = "left"             # arithmetic worked solutions: "left" to right, or "any"
                                      # order of the terms (sums only: many reasoning paths)
    c.task.train_path = ""            # gsm8k: local JSONL files
    c.task.test_path = ""

    # Base pretraining on the synthetic corpus (skipped when model.path is set).
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.num_examples = 40_000  # corpus size (pairs of prompt and worked solution)
    c.pretrain.steps = 600
    c.pretrain.batch_size = 32
    c.pretrain.seq_len = 128          # tokens (bytes) per example, prompt + completion
    c.pretrain.learning_rate = 5e-3
    c.pretrain.warmup_steps = 100
    c.pretrain.weight_decay = 0.01
    # Styles of the corpus: careful worked solutions are in the distribution but not the mode.
    c.pretrain.style_careful = 0.3
    c.pretrain.style_flawed = 0.2
    c.pretrain.style_guess = 0.25
    c.pretrain.style_unformatted = 0.15
    c.pretrain.style_mixed_language = 0.1

    c.grpo = ml_collections.ConfigDict()
    c.grpo.steps = 100
    c.grpo.prompts_per_step = 16      # P
    c.grpo.num_generations = 8        # G
    c.grpo.beta = 0.04                # β, k3 KL to the reference (the base model)
    c.grpo.epsilon_low = 0.2          # ε_low
    c.grpo.epsilon_high = 0.2         # ε_high (DAPO clip-higher: 0.28)
    c.grpo.num_iterations = 1         # μ
    c.grpo.aggregation = "seq_mean_token_mean"  # | token_mean (DAPO) | seq_mean_token_sum_norm
    c.grpo.advantage_scale = "group_std"        # | none (Dr. GRPO) | batch_std
    c.grpo.dynamic_sampling = False   # DAPO: drop groups whose rewards are all equal
    c.grpo.overlong_filter = False    # DAPO: truncated samples excluded from the loss
    c.grpo.grad_accum = 1
    c.grpo.learning_rate = 3e-4
    c.grpo.warmup_steps = 5
    c.grpo.temperature = 1.0
    c.grpo.max_new_tokens = 96
    c.grpo.max_prompt_tokens = 48
    c.grpo.accuracy_weight = 1.0
    c.grpo.format_weight = 0.5
    c.grpo.language_weight = 0.0

    c.eval = ml_collections.ConfigDict()
    c.eval.num_problems = 200         # held-out (test split) problems
    c.eval.num_samples = 2            # samples per problem at eval.temperature
    c.eval.temperature = 1.0
    c.eval.every = 20                 # GRPO steps between evaluations (0: start and end only)

    c.checkpoint_every = 20
    c.keep_checkpoints = 2
    # Mesh axis sizes (one may be -1: all remaining devices); all 1: a single device.
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})

    if variant == "tiny":
        pass
    elif variant in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        c.model.preset = variant
        c.model.compute_dtype = "bfloat16"
        c.model.remat = True
        c.task.name = "gsm8k"
        c.task.template = "r1_zero"
        c.pretrain.steps = 0
        c.grpo.steps = 400
        c.grpo.learning_rate = 1e-6
        c.grpo.max_new_tokens = 512
        c.grpo.max_prompt_tokens = 256
        c.grpo.num_generations = 16
        c.grpo.grad_accum = 16        # 256 rollouts of 768 tokens: 16 per micro-batch
        c.eval.num_samples = 1
        c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    else:
        raise ValueError(f"unknown r1_zero variant {variant!r}; known: tiny, qwen2.5-0.5b, "
                         "qwen2.5-1.5b")
    c.lock()
    return c
