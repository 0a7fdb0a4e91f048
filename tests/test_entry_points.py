"""The entry points' contract with people and schedulers: provenance in the workdir, a warning
naming changed fields on resume, one clear line for a workdir that is a file, a misspelt field or
a bad value, and exit status 75 (not 1) on preemption."""
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from r1jax import provenance, train

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_setup", REPO / "experiments" / "run_setup.py")
run_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_setup)


def _config(lr=1e-3):
    return ml_collections.ConfigDict({"grpo": {"learning_rate": lr, "steps": 3},
                                      "task": {"digits": (1, 1)}})


def test_provenance_is_written_and_changes_are_named(tmp_path, capsys):
    run_setup.prepare_workdir(_config(), str(tmp_path), ["train.py"])
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["config"]["grpo"]["learning_rate"] == 1e-3
    assert record["packages"]["jax"] and record["packages"]["optax"]
    assert "code_version" in record and record["argv"] == ["train.py"]
    run_setup.prepare_workdir(_config(), str(tmp_path), ["train.py"])
    assert "changed config" not in capsys.readouterr().err
    run_setup.prepare_workdir(_config(lr=3e-4), str(tmp_path), ["train.py"])
    err = capsys.readouterr().err
    assert "grpo.learning_rate: 0.001 -> 0.0003" in err and "steps" not in err
    assert (tmp_path / "provenance.previous.json").exists()


def test_config_changes_flattens_and_names_fields():
    assert provenance.config_changes({"a": {"b": 1, "c": (1, 2)}}, {"a": {"b": 2, "c": [1, 2]}}) \
        == ["a.b: 1 -> 2"]
    assert provenance.config_changes({"a": 1}, {"b": 1}) == [
        "a: 1 -> '<absent>'", "b: '<absent>' -> 1"]


def test_workdir_that_is_a_file_is_one_clear_line(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        run_setup.prepare_workdir(_config(), str(path), [])
    assert path.read_text() == "x"  # nothing written over it


def test_preemption_exits_75_with_one_line(capsys):
    def preempted():
        raise train.Preempted("checkpoint saved at grpo step 4; run the same command to resume")
    with pytest.raises(SystemExit) as e:
        run_setup.run_or_exit(preempted)
    assert e.value.code == train.EXIT_PREEMPTED == 75
    assert capsys.readouterr().err.strip().splitlines() == [
        "checkpoint saved at grpo step 4; run the same command to resume"]
    assert run_setup.run_or_exit(lambda x: x + 1, 1) == 2


def _entry(args, tmp_path, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(REPO / "experiments" / "train.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(tmp_path))


def test_misspelt_field_fails_in_seconds_without_a_traceback(tmp_path):
    t0 = time.time()
    out = _entry([f"--config={REPO}/configs/r1_zero.py:tiny", f"--workdir={tmp_path}/w",
                  "--config.grpo.lerning_rate=1e-3"], tmp_path)
    assert out.returncode != 0 and time.time() - t0 < 60
    assert "lerning_rate" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_help_lists_each_config_its_variants_and_fields(tmp_path):
    out = _entry(["--help"], tmp_path)  # absl's --help exits with 1 after printing
    for text in ("configs/r1_zero.py (run by experiments/train.py)", "qwen2.5-1.5b",
                 "configs/test_time_scaling.py (run by experiments/test_time_scaling.py)",
                 "fields: checkpoint_every, eval.*, grpo.*", "--workdir"):
        assert text in out.stdout, text


SMALL = ["--config.pretrain.steps=2", "--config.pretrain.num_examples=64",
         "--config.pretrain.batch_size=4", "--config.pretrain.warmup_steps=1",
         "--config.grpo.steps=1", "--config.grpo.prompts_per_step=2",
         "--config.grpo.num_generations=2", "--config.grpo.max_new_tokens=8",
         "--config.grpo.warmup_steps=0", "--config.eval.num_problems=2",
         "--config.eval.num_samples=2", "--config.eval.pass_ks=(1,2)",
         "--config.eval.every=0", "--config.checkpoint_every=1"]


def test_each_phase_says_it_starts_and_a_restart_says_what_it_reuses(tmp_path):
    """A run logs each phase; the same command again finds every stage complete and reuses the
    stored base evaluation instead of evaluating the base again."""
    args = [f"--config={REPO}/configs/r1_zero.py:tiny", f"--workdir={tmp_path}/w", *SMALL]
    first = _entry(args, tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    for text in ("r1jax: pretrain: starting (2 steps", "r1jax: evaluation of the base model: 2 "
                 "held-out problems", "r1jax: grpo: starting (1 steps",
                 "r1jax: evaluation of the final policy", "r1jax: writing results.json"):
        assert text in first.stderr, text
    rows = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    again = _entry(args, tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    for text in ("r1jax: pretrain: already complete (step 2)", "r1jax: evaluation of the base "
                 "model: reusing", "r1jax: grpo: already complete (step 1)"):
        assert text in again.stderr, text
    assert "evaluation of the base model: 2 held-out" not in again.stderr
    base_rows = [r for r in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
                 if '"step": 0' in r and "eval_accuracy" in r]
    assert len(base_rows) == 1 and len(rows) > 0  # the base's row is not written twice
