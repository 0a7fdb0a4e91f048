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


def config_with(name: str, variant: str, **overrides):
    """`load_config(name, variant)` with dotted paths set: config_with("r1", "tiny",
    **{"sft.steps": 2})."""
    c = load_config(name, variant)
    c.unlock()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    c.lock()
    return c



import shutil  # noqa: E402

import pytest  # noqa: E402


def _built_once(tmp_path_factory, worker_id, name: str, build) -> pathlib.Path:
    """`build(dir)` run once per test run, also across xdist workers (a file lock: the first
    worker builds, the others wait and reuse); returns the finished directory. Users copy out
    of it and never write into it."""
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the run's directory, shared by all of its workers
        root = root.parent
    built = root / f"shared_{name}"
    with FileLock(str(root / f"shared_{name}.lock")):
        if not (built / "done").exists():
            shutil.rmtree(built, ignore_errors=True)
            build(built)
            (built / "done").touch()
    return built


def _tiny_base_dir(tmp_path_factory, worker_id) -> pathlib.Path:
    def build(d):
        from r1jax import pretrain
        from r1jax.reporting import MetricWriter
        pretrain.base_model(load_config("r1_zero", "tiny"), str(d),
                            MetricWriter(str(d), tensorboard=False), show_progress=False)
    return _built_once(tmp_path_factory, worker_id, "tiny_base", build)


def _install_base(built: pathlib.Path, workdir) -> None:
    workdir = pathlib.Path(workdir)
    shutil.copytree(built / "base", workdir / "base")
    shutil.copy(built / "metrics.jsonl", workdir / "metrics.jsonl")  # its loss curve


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, worker_id):
    """The R1-Zero tiny base (`configs/r1_zero.py:tiny`'s pretraining), built once per test run
    and shared by every recipe's slow test. Returns `install(workdir)`, which copies the base
    checkpoint into `<workdir>/base` (and its pretraining metrics into
    `<workdir>/metrics.jsonl`), where `pretrain.base_model` finds and reuses it."""
    built = _tiny_base_dir(tmp_path_factory, worker_id)
    return lambda workdir: _install_base(built, workdir)


@pytest.fixture(scope="session")
def tiny_r1_zero(tmp_path_factory, worker_id):
    """`configs/r1_zero.py:tiny` run once per test run on the shared base: the directory holds
    results.json, metrics.jsonl, the plots and the GRPO checkpoints (`grpo/`), for the R1-Zero
    acceptance test and for recipes that compare with it or start from its policy. Read it;
    copy before writing."""
    base = _tiny_base_dir(tmp_path_factory, worker_id)

    def build(d):
        from r1jax.recipes import r1_zero
        _install_base(base, d)
        r1_zero.run(load_config("r1_zero", "tiny"), str(d), show_progress=False)
    return _built_once(tmp_path_factory, worker_id, "tiny_r1_zero", build)
