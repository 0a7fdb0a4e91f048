"""r1jax: reasoning LLMs in JAX.

The public API is what this file re-exports (see README.md). Submodules such as
`r1jax.seqio_tasks` (which imports TensorFlow) are imported only when asked for.
"""
from r1jax import grpo, rewards, search
from r1jax.hf import load_hf, save_hf
from r1jax.model import ModelConfig, forward, hidden_states, init_params
from r1jax.sampler import SampleOutput, SamplingConfig, generate

__version__ = "0.1.0"

__all__ = ["ModelConfig", "init_params", "forward", "hidden_states", "load_hf", "save_hf",
           "generate", "SamplingConfig", "SampleOutput", "rewards", "grpo", "search"]
