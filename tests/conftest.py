"""Test-wide settings: 8 simulated CPU devices, loud shape errors, float32 everywhere."""
import os

# Must happen before jax initialises its backend: sharding tests use 8 host devices.
os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


import importlib.util  # noqa: E402
import pathlib  # noqa: E402

_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str, variant: str):
    """`configs/<name>.py:get_config(variant)` (configs/ is a folder of files, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_config", _CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)

