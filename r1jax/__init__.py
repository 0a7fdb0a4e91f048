"""r1jax: reasoning LLMs in JAX.

The public API is what this file re-exports; see README.md and DESIGN.md.
"""
from r1jax.model import ModelConfig, init_params, forward, hidden_states

__version__ = "0.1.0"
