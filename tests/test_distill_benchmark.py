"""experiments/benchmarks/distill_step.py: the real-shape memory row, run at toy widths."""
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_distill_step_memory_shrink(tmp_path):
    code = ("import sys, runpy; sys.argv = ['distill_step.py', '--shrink', '--out', "
            f"{str(tmp_path / 'out.json')!r}]; "
            "runpy.run_path('experiments/benchmarks/distill_step.py', run_name='__main__'); "
            "assert 'ml_collections' not in sys.modules and 'seqio' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                                           "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["shrink"] and result["grad_accum"] == 2
    assert result["teacher_params"] > result["student_params"] > 0
    if result["memory_bytes"] is not None:
        assert result["memory_bytes"]["temp"] > 0
