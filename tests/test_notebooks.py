"""The Colab notebooks: committed without outputs, parameters matching their configs, an install
cell that plans the right packages for each runtime, and executed end to end (a few steps) in a
fresh python3 kernel, writing only into a tmp dir, with the teaching cells printing what they
teach."""
import ast
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parent.parent
R1_ZERO_NB = REPO / "colab" / "r1_zero.ipynb"


def _load_config_module():
    spec = importlib.util.spec_from_file_location("r1_zero_config_for_test",
                                                  REPO / "configs" / "r1_zero.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parameters_cell(nb) -> str:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0].source


def _literal_assignments(source: str) -> dict:
    """Top-level `name = <literal>` assignments of a cell (what papermill overrides)."""
    values = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal (e.g. workdir from the environment)
    return values


def _cell(nb, cell_id: str):
    cells = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(cells) == 1, f"expected one cell with id {cell_id!r}, found {len(cells)}"
    return cells[0]


def _install_cell_source() -> str:
    return _cell(nbformat.read(R1_ZERO_NB, as_version=4), "r1zero-install").source


def _install_functions() -> dict:
    """The install cell's imports, constants and functions, without running its last line (the
    call that installs)."""
    module = ast.parse(_install_cell_source())
    module.body = [n for n in module.body if not isinstance(n, ast.Expr)]
    namespace = {}
    exec(compile(module, "install cell", "exec"), namespace)
    return namespace


def _in_range_environment(requirements) -> dict:
    """{name: version}: every requirement installed at its lower bound, jax CPU-only."""
    from packaging.requirements import Requirement
    env = {}
    for line in requirements:
        req = Requirement(line)
        env[req.name] = next(s.version for s in req.specifier if s.operator == ">=")
    env["jaxlib"] = env["jax"]
    return env


def test_install_plan_keeps_what_is_there_and_adds_the_runtime_backend():
    f = _install_functions()
    requirements = f["setup_requirements"]((REPO / "setup.py").read_text())
    assert any(r.startswith("jax>=") for r in requirements)
    assert "ml-collections>=1.0" in requirements and "numpy>=1.26" in requirements
    plan, env = f["install_plan"], _in_range_environment(requirements)
    jax_version = env["jax"]
    # CPU with jax present: nothing for jax, nothing at all.
    assert plan("cpu", requirements, env) == []
    # GPU with a CPU-only jax: the CUDA build, keeping the installed jax version.
    assert plan("gpu", requirements, env) == [f"jax[cuda12]=={jax_version}"]
    # GPU where jax already has its CUDA plugin (Colab's GPU runtime): nothing.
    assert plan("gpu", requirements, dict(env, jax_cuda12_plugin=jax_version)) == []
    assert plan("gpu", requirements, {**env, "jax-cuda13-plugin": jax_version}) == []
    # TPU: jax[tpu], unless libtpu is installed.
    assert plan("tpu", requirements, env) == [f"jax[tpu]=={jax_version}"]
    assert plan("tpu", requirements, dict(env, libtpu="0.0.20")) == []
    # No jax at all, or one outside the range: the runtime's build within setup.py's range.
    no_jax = {k: v for k, v in env.items() if k != "jax"}
    (gpu_jax,) = plan("gpu", requirements, no_jax)
    assert gpu_jax.startswith("jax[cuda12]") and ">=0.10" in gpu_jax and "==" not in gpu_jax
    assert plan("cpu", requirements, dict(env, jax="0.4.30")) == [
        next(r for r in requirements if r.startswith("jax>="))]
    # A missing requirement is installed (under either spelling of its name); present ones
    # (numpy) are not, unless their version is out of range.
    missing = {k: v for k, v in env.items() if k != "ml-collections"}
    assert plan("cpu", requirements, missing) == ["ml-collections>=1.0"]
    assert plan("cpu", requirements, dict(missing, ml_collections="1.1.0")) == []
    assert not any(r.startswith("numpy") for r in plan("cpu", requirements, missing))
    assert plan("cpu", requirements, dict(env, numpy="1.21.6")) == ["numpy>=1.26"]
    # seqio (only r1jax.seqio_tasks imports it) is never installed by the notebook.
    assert plan("cpu", requirements, {k: v for k, v in env.items() if k != "seqio"}) == []


def test_install_cell_detects_the_runtime():
    detect = _install_functions()["detect_runtime"]
    assert detect({}, [], False) == "cpu"
    assert detect({}, [], True) == "gpu"
    assert detect({}, ["/dev/accel0"], False) == "tpu"
    assert detect({"TPU_NAME": "local"}, [], False) == "tpu"
    assert detect({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, [], True) == "tpu"
    assert detect({"TPU_NAME": ""}, [], False) == "cpu"


def test_install_cell_finds_an_uploaded_checkout(tmp_path):
    find = _install_functions()["find_checkout"]
    assert find(str(tmp_path)) is None
    # A GitHub "Download ZIP" of the repository, with its top folder.
    archive = tmp_path / "r1jax-main.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("r1jax-main/setup.py", "")
        z.writestr("r1jax-main/r1jax/__init__.py", "")
        z.writestr("r1jax-main/configs/r1_zero.py", "")
    found = pathlib.Path(find(str(tmp_path)))
    assert found == tmp_path / "r1jax_repo"
    assert (found / "setup.py").is_file() and (found / "r1jax" / "__init__.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1jax-main.zip", "r1jax_repo"]
    # An uploaded folder named r1jax is found as it is.
    other = tmp_path / "upload"
    (other / "r1jax" / "r1jax").mkdir(parents=True)
    (other / "r1jax" / "setup.py").write_text("")
    (other / "r1jax" / "r1jax" / "__init__.py").write_text("")
    assert pathlib.Path(find(str(other))) == other / "r1jax"


def test_install_cell_installs_nothing_when_r1jax_is_importable(monkeypatch, capsys):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args}")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    exec(compile(_install_cell_source(), "install cell", "exec"), {})
    assert "nothing to install" in capsys.readouterr().out


def _fake_checkout_zip(path: pathlib.Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("r1jax-main/setup.py", (REPO / "setup.py").read_text())
        z.writestr("r1jax-main/r1jax/__init__.py", "")


def test_install_cell_on_a_fresh_gpu_runtime(tmp_path, monkeypatch, capsys):
    """Where r1jax is not importable: the uploaded zip is extracted, jax gets its CUDA build
    when this environment's jax is CPU-only, and r1jax is installed with --no-deps."""
    import jax  # noqa: F401  (imported before the cell replaces it: a restart is asked for)
    f = _install_functions()
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setitem(f, "r1jax_importable", lambda: False)
    monkeypatch.setitem(f, "nvidia_smi_works", lambda: True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("R1JAX_REPO", "")
    monkeypatch.chdir(tmp_path)
    _fake_checkout_zip(tmp_path / "r1jax-main.zip")
    f["install_r1jax"]()
    repo = str(tmp_path / "r1jax_repo")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    installed = {f["canonical_name"](d.metadata["Name"])
                 for d in importlib.metadata.distributions()}
    cuda_jax = bool(installed & set(f["BACKEND_PACKAGES"]["gpu"]))
    jax_build = [] if cuda_jax else [pip + [f"jax[cuda12]=={importlib.metadata.version('jax')}"]]
    assert commands == jax_build + [pip + ["--no-deps", "-e", repo]]
    assert sys.path[0] == repo and os.environ["R1JAX_REPO"] == repo
    out = capsys.readouterr().out
    assert "runtime: gpu" in out
    assert ("restart the session" in out) == (not cuda_jax)


def test_install_cell_clones_the_repository_url(tmp_path, monkeypatch):
    f = _install_functions()
    commands = []

    def run(cmd, **kwargs):
        commands.append(cmd)
        if cmd[:2] == ["git", "clone"]:  # what a clone leaves: a checkout
            with zipfile.ZipFile(tmp_path / "clone.zip", "w") as z:
                z.writestr("setup.py", (REPO / "setup.py").read_text())
                z.writestr("r1jax/__init__.py", "")
            with zipfile.ZipFile(tmp_path / "clone.zip") as z:
                z.extractall(cmd[-1])
            os.remove(tmp_path / "clone.zip")
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setitem(f, "r1jax_importable", lambda: False)
    monkeypatch.setitem(f, "nvidia_smi_works", lambda: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("R1JAX_REPO", "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="R1JAX_REPO_URL"):  # the placeholder URL
        f["install_r1jax"]()
    assert commands == []
    monkeypatch.setitem(f, "R1JAX_REPO_URL", "https://example.org/someone/r1jax.git")
    f["install_r1jax"]()
    assert commands[0] == ["git", "clone", "--depth", "1", "https://example.org/someone/r1jax.git",
                           "r1jax_repo"]
    # This environment has every requirement at a version in range: only r1jax, no deps.
    assert commands[1:] == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e",
                             str(tmp_path / "r1jax_repo")]]


def test_readme_opens_the_notebook_in_colab():
    """The README's "Open in Colab" link names this notebook, and the same repository as the
    install cell's R1JAX_REPO_URL."""
    readme = (REPO / "README.md").read_text()
    m = re.search(r"https://colab\.research\.google\.com/github/([^/\s]+)/([^/\s]+)/blob/"
                  r"[^/\s]+/([^)\s]+\.ipynb)", readme)
    assert m, "README.md has no Open in Colab link"
    owner, repo, path = m.groups()
    assert (REPO / path).resolve() == R1_ZERO_NB
    assert _install_functions()["R1JAX_REPO_URL"] == f"https://github.com/{owner}/{repo}"


def test_committed_without_outputs():
    nb = nbformat.read(R1_ZERO_NB, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has stored outputs; clear them"
            assert cell.execution_count is None, f"cell {i} has an execution count"


def test_parameter_defaults_are_the_tiny_config():
    params = _literal_assignments(_parameters_cell(nbformat.read(R1_ZERO_NB, as_version=4)))
    c = _load_config_module().get_config("tiny")
    expected = {"variant": "tiny", "seed": c.seed, "pretrain_examples": c.pretrain.num_examples,
                "pretrain_steps": c.pretrain.steps,
                "pretrain_batch_size": c.pretrain.batch_size, "grpo_steps": c.grpo.steps,
                "prompts_per_step": c.grpo.prompts_per_step,
                "num_generations": c.grpo.num_generations,
                "eval_problems": c.eval.num_problems, "eval_every": c.eval.every}
    assert {k: params.get(k) for k in expected} == expected


def _smoke_environment(tmp_path, monkeypatch):
    """The kernel inherits this environment: the venv's python first on PATH (the kernelspec
    runs "python"), smoke sizes, the work dir (returned), and no simulated multi-device CPU."""
    workdir = tmp_path / "run"
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    monkeypatch.setenv("R1JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("R1JAX_WORKDIR", str(workdir))
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    return workdir


@pytest.mark.slow
def test_r1_zero_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(R1_ZERO_NB, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    results = json.loads((workdir / "results.json").read_text())
    for key in ("base_accuracy", "final_accuracy", "format_rate"):
        assert 0.0 <= results[key] <= 1.0, (key, results[key])
    assert results["grpo_steps"] == 3 and results["num_eval_problems"] == 16
    assert (workdir / "grpo_training.png").is_file()
    assert (workdir / "pretrain_loss.png").is_file()

    def printed(cell_id):
        return "".join(o.get("text", "") for o in _cell(nb, cell_id).outputs
                       if o.get("name") == "stdout")

    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "nothing to install" in printed("r1zero-install")
    # One completion: its rewards, the total the recipe's weights give (1.0 and 0.5).
    m = re.search(r"rewards: accuracy ([01])\.0, format ([01])\.0, total (\d\.\d\d)",
                  printed("r1zero-completion"))
    assert m, printed("r1zero-completion")
    assert float(m[3]) == pytest.approx(float(m[1]) + 0.5 * float(m[2]))
    # One group: G rows of rewards and advantages, which are the formula's.
    group = printed("r1zero-group")
    rows = re.findall(r"^\s*\d+\s+[01]\.0\s+[01]\.0\s+(\d\.\d\d)\s+([+-]\d+\.\d{3})\s",
                      group, re.MULTILINE)
    assert len(rows) == 4, group   # G = 4 at smoke size
    r, a = (np.array([float(x[i]) for x in rows]) for i in (0, 1))
    expected = (r - r.mean()) / (r.std(ddof=1) + 1e-6) if r.std() > 0 else np.zeros_like(r)
    np.testing.assert_allclose(a, expected, atol=2e-3)
    assert "A_i = (r_i - mean) / (std + 1e-6)" in group
    assert "advantages sum to 0 in every group: True" in group
    # One step: the metrics of a first step (ratio 1, nothing clipped, no KL, loss -mean(A) = 0,
    # a gradient), and G completions' log-probs before and after it.
    step = printed("r1zero-step")
    metrics = dict(re.findall(r"(\w+) (-?[\d.]+(?:e[+-]\d+)?)(?=,|$)",
                              step.split("step metrics: ")[1].split("\n")[0]))
    assert set(metrics) >= {"loss", "pg_loss", "kl", "ratio_mean", "clip_frac", "entropy",
                            "grad_norm"}, step
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0, abs=1e-4)
    assert float(metrics["clip_frac"]) == 0.0 and float(metrics["kl"]) == pytest.approx(0.0)
    assert abs(float(metrics["loss"])) < 1e-4 and float(metrics["grad_norm"]) > 0
    assert len(re.findall(r"A\s+[+-]\d\.\d{3}\s+-?\d+\.\d{3} -> +-?\d+\.\d{3}", step)) == 4, step
    assert "held-out accuracy" in text and "AFTER GRPO" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the plot cell displayed fewer than two PNGs"
    # Nothing was written next to the notebook or into the repository's runs/ folder.
    assert not (REPO / "colab" / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


STAR_NB = REPO / "colab" / "star.ipynb"


def test_star_notebook_committed_without_outputs_and_its_defaults_are_the_tiny_config():
    nb = nbformat.read(STAR_NB, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells
               if c.cell_type == "code")
    params = _literal_assignments(_parameters_cell(nb))
    spec = importlib.util.spec_from_file_location("star_config_for_test",
                                                  REPO / "configs" / "star.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    expected = {"variant": "tiny", "seed": c.seed, "pretrain_examples": c.pretrain.num_examples,
                "pretrain_steps": c.pretrain.steps, "iterations": c.star.iterations,
                "train_problems": c.star.num_train_problems,
                "samples_per_problem": c.star.samples_per_problem, "star_steps": c.star.steps,
                "rationalize": c.star.rationalize, "ablation": c.star.ablation,
                "eval_problems": c.eval.num_problems, "eval_samples": c.eval.num_samples}
    assert {k: params.get(k) for k in expected} == expected


@pytest.mark.slow
def test_star_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(STAR_NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    results = json.loads((workdir / "results.json").read_text())
    assert [it["iteration"] for it in results["iterations"]] == [0, 1]
    assert [it["iteration"] for it in results["no_rationalization"]["iterations"]] == [0, 1]
    assert len(results["paired_last_minus_first"]) == 3
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "last - iteration 0, greedy (paired)" in text and "LAST ITERATION" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
