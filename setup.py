"""r1jax: reasoning LLMs in JAX -- search against verifiers, GRPO / R1-Zero, the R1 pipeline."""
import setuptools

setuptools.setup(
    name="r1jax",
    version="0.1.0",
    description="JAX/Flax research codebase for reasoning LLMs",
    packages=setuptools.find_packages(include=["r1jax", "r1jax.*"]),
    package_data={"r1jax": ["data/*.jsonl"]},
    python_requires=">=3.11",
    install_requires=[
        # Supported: Python 3.11-3.12, JAX 0.10.x-0.11.x (CPU, CUDA, TPU).
        "jax>=0.10,<0.13",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorstore>=0.1.70",
        "seqio>=0.0.19",
        "ml-collections>=1.0",
        "chex>=0.1.88",
        "numpy>=1.26",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "jinja2>=3.1.6",
        "tensorboardX>=2.6",
    ],
    extras_require={
        # MATH-style answer checking by math-verify (task.checker = "math_verify").
        "math": ["math-verify>=0.9"],
        "test": [
            "math-verify>=0.9",
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "transformers>=4.45",
            "torch>=2.4",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
    },
)
