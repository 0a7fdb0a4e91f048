"""Training an ORM and a PRM on a policy's own samples (read by
`r1jax.recipes.test_time_scaling`, trained by `r1jax.train.run_verifier`).

Variants (`get_config(VARIANT)`; the test-time scaling config nests this as `config.verifier`):
  tiny          the tiny byte-level base model's samples on synthetic arithmetic; step labels
                by Monte Carlo rollouts (k per step prefix); 2 CPU cores, a minute or two a model.
  qwen2.5-0.5b  a real policy's samples on GSM8K-style JSONL; more samples and rollouts.

Step labels (`labels`):
  "mc"    Math-Shepherd: the policy completes each non-final step prefix k times; hard label =
          any completion correct (soft: the fraction), the final step's label is the outcome.
          A step of a correct sample is labelled 1 without rollouts (the sample itself is a
          correct completion of every one of its prefixes), so rollouts are spent on
          incorrect samples only (hard labels).
  "gold"  the task's worked solutions (`tasks.solve` with `gold_error_rate` per step) with their
          `step_correct` labels instead of policy samples (synthetic tasks only; cheapest).
"""
import ml_collections


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_problems = 200          # train-split problems the policy samples on
    c.samples_per_problem = 4     # policy samples per problem (temperature below)
    c.temperature = 1.0
    c.labels = "mc"               # "mc" (rollouts from step prefixes) | "gold" (worked solutions)
    c.mc_rollouts = 4             # k, rollouts per step prefix (labels="mc")
    c.soft_labels = False         # PRM targets: soft (fraction correct, needs rollouts on every
                                  # sample) instead of hard (any rollout correct)
    c.gold_error_rate = 0.3       # labels="gold": per-step error rate of the worked solutions
    c.validation_fraction = 0.1   # share of the problems held out for the step-level AUC
    c.steps = 150                 # optimizer steps per verifier (ORM and PRM each)
    c.batch_size = 16
    c.learning_rate = 3e-4        # AdamW, cosine decay after warmup
    c.warmup_steps = 20
    c.weight_decay = 0.0
    c.grad_clip = 0.0             # global-norm clipping of the gradients; 0 = none
    c.checkpoint_every = 100      # steps between checkpoints (<workdir>/orm, <workdir>/prm)
    c.head_init_scale = 0.01      # value head w ~ normal(0, scale / sqrt(D))
    c.seq_bucket = 32             # training rows padded to a multiple of this (few compilations)
    c.rollout_batch = 512         # prefixes per generate call (memory bound on big models)

    if variant == "tiny":
        # Samples at the temperature the test-time methods use (0.5; about half are correct):
        # verifiers trained on T = 1 samples ranked held-out T = 0.5 samples worse. 2,400
        # samples and 400 steps: 800 samples and 250 steps gave held-out PRM AUCs 0.02 lower
        # (experiments/benchmarks/RESULTS.md).
        c.temperature = 0.5
        c.num_problems = 300
        c.samples_per_problem = 8
        c.steps = 400
    elif variant == "qwen2.5-0.5b":
        c.num_problems = 2000
        c.samples_per_problem = 8
        c.mc_rollouts = 8
        c.steps = 1000
        c.batch_size = 16
        c.learning_rate = 1e-5
        c.warmup_steps = 50
        c.seq_bucket = 128
        c.rollout_batch = 64
    else:
        raise ValueError(f"unknown verifier variant {variant!r}; known: tiny, qwen2.5-0.5b")
    return c
