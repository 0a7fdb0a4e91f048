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
    c.task.checker = "builtin"        # answer checker of gsm8k / math: builtin | math_verify

    # Base pretraining on the synthetic corpus (skipped when model.path is set).
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.num_examples = 40_000  # corpus size (pairs of prompt and worked solution)
    c.pretrain.steps = 800            # at 600 the base reasons less reliably and R1-Zero's gain
                                      # varied 2x between runs (RESULTS.md)
    c.pretrain.batch_size = 32
    c.pretrain.seq_len = 120          # tokens (bytes) per example, prompt + completion (the
                                      # longest tiny example has 118)
    c.pretrain.learning_rate = 5e-3
    c.pretrain.warmup_steps = 100
    c.pretrain.weight_decay = 0.01
    # Styles of the corpus. Careful worked solutions are in the distribution but not its mode,
    # so the base's greedy path guesses: after " " the tagged styles (0.65) outweigh the
    # untagged worked solutions (0.35); after "<think>" an empty think block (guess, 0.35 of
    # the corpus) outweighs "first" (careful, flawed, mixed-language starting in English:
    # 0.225) and "d'abord" (0.075). Worked steps, tagged or not, are 65% of the corpus, so the
    # base can reason; GRPO has to make reasoning its most likely path.
    c.pretrain.style_careful = 0.15
    c.pretrain.style_flawed = 0.05
    c.pretrain.style_guess = 0.35
    c.pretrain.style_unformatted = 0.35
    c.pretrain.style_mixed_language = 0.1
    # Multi-example documents (`tasks.few_shot_documents`), a share of the corpus in place of
    # its last examples; 0 here (this base stays as measured). configs/prompting.py sets it.
    c.pretrain.style_fewshot = 0.0
    c.pretrain.fewshot_max_examples = 5   # examples per document, 1 to this
    c.pretrain.length_bucket = 0      # > 0: each batch from one length group, cut to its
                                      # width (a multiple of this); 0: padded to seq_len

    c.grpo = ml_collections.ConfigDict()
    c.grpo.steps = 40
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
    c.grpo.overlong_cache_len = 0     # DAPO soft overlong penalty over the last L_cache tokens
    c.grpo.grad_accum = 1
    c.grpo.learning_rate = 3e-4
    c.grpo.warmup_steps = 5
    c.grpo.temperature = 1.0          # != 1 (or top_k / top_p / min_p): the loop recomputes
    c.grpo.top_k = 0                  # the old log-probs at temperature 1
    c.grpo.top_p = 1.0
    c.grpo.min_p = 0.0
    c.grpo.logprob_micro_batch = 0    # rows per reference / old log-prob pass; 0: auto
    c.grpo.max_new_tokens = 96
    c.grpo.max_prompt_tokens = 32     # tiny prompts have <= 32 tokens; rollouts are packed to
                                      # max_prompt_tokens + max_new_tokens = 128
    c.grpo.accuracy_weight = 1.0
    c.grpo.format_weight = 0.5
    c.grpo.language_weight = 0.0
    c.grpo.repetition_weight = 0.0    # weight of the repetition penalty (in [-1, 0])
    c.grpo.length_reward = "none"     # "cosine": accuracy scaled by length (Yeo et al. 2025)
    c.grpo.partial_format = False     # partial credit in the format reward

    c.eval = ml_collections.ConfigDict()
    c.eval.num_problems = 100         # held-out (test split) problems, the same for base and
                                      # final (paired differences over problems)
    c.eval.num_samples = 16           # base and final: samples per problem at eval.temperature,
                                      # plus one greedy completion per problem
    c.eval.temperature = 1.0
    c.eval.pass_ks = (1, 4, 16)       # pass@k and majority@k for each k <= num_samples
    c.eval.every = 10                 # GRPO steps between evaluations (0: start and end only)
    c.eval.curve_samples = 4          # samples per problem in those (plus greedy)

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
        # 256 rollouts of 768 tokens in micro-batches of 128 (0.5b) / 64 (1.5b) rows: update
        # temporaries about 19 / 30 GiB (RESULTS.md, "Memory: sizing without a device").
        c.grpo.grad_accum = 2 if variant == "qwen2.5-0.5b" else 4
        c.eval.num_problems = 200
        c.eval.num_samples = 1
        c.eval.every = 20
        c.eval.curve_samples = 1
        c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    else:
        raise ValueError(f"unknown r1_zero variant {variant!r}; known: tiny, qwen2.5-0.5b, "
                         "qwen2.5-1.5b")
    c.lock()
    return c
