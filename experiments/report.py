"""Builds the visual report: `python experiments/report.py --workdir runs/report`

Writes <workdir>/index.html (self-contained: inline SVG, no script, no network) and
<workdir>/report.json (the numbers behind each figure) from the recipes' workdirs:
--r1_zero_workdir and --tts_workdir (each read with the config in its provenance.json, or the
tiny variant's), and --r1_workdir, --star_workdir, --distill_workdir (their results.json; their
section says "not run" without one). Without --r1_zero_workdir / --tts_workdir the tiny variants
run first, into <workdir>/r1_zero and <workdir>/tts (reused, or resumed, when already there);
the test-time scaling run then reuses the R1-Zero run's base with --tts_base=r1_zero.
"""
import json
import os
import sys
import time

from absl import app, flags, logging

import run_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "Where index.html and report.json go.")
_R1_ZERO = flags.DEFINE_string("r1_zero_workdir", "", "An R1-Zero run (configs/r1_zero.py).")
_TTS = flags.DEFINE_string("tts_workdir", "", "A test-time scaling run "
                           "(configs/test_time_scaling.py).")
_R1 = flags.DEFINE_string("r1_workdir", "", "An R1 pipeline run (results.json with stages).")
_STAR = flags.DEFINE_string("star_workdir", "", "A STaR run (results.json with iterations).")
_DISTILL = flags.DEFINE_string("distill_workdir", "", "A distillation run (results.json with "
                               "methods).")
_TTS_BASE = flags.DEFINE_enum("tts_base", "own", ["own", "r1_zero"],
                              "When the tiny test-time scaling run is made here: pretrain its "
                              "own base (the documented tiny variant) or reuse the R1-Zero "
                              "run's base (saves its pretraining).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of what the report samples.")
flags.mark_flags_as_required(["workdir"])

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def tiny_config(name: str):
    """configs/<name>.py:tiny."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"{name}_config",
                                                  os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("tiny")


def config_of(workdir: str, name: str):
    """The config a run was made with (its provenance.json), else the tiny variant's."""
    import ml_collections
    path = os.path.join(workdir, "provenance.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f)["config"])
    print(f"{workdir} has no provenance.json: reading it with configs/{name}.py:tiny")
    return tiny_config(name)


def ensure_run(name: str, workdir: str, config, done_file: str):
    """Runs recipe `name` (r1_zero / test_time_scaling) with `config` into `workdir` unless its
    `done_file` is there; returns the config."""
    if os.path.exists(os.path.join(workdir, done_file)):
        print(f"reusing {workdir}")
        return config_of(workdir, name)
    import importlib
    recipe = importlib.import_module(f"r1jax.recipes.{name}")
    print(f"running configs/{name}.py:tiny into {workdir}")
    run_setup.prepare_workdir(config, workdir, sys.argv)
    run_setup.run_or_exit(recipe.run, config, workdir)
    return config


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)
    from r1jax.recipes import report
    t0 = time.time()
    out = _WORKDIR.value
    os.makedirs(out, exist_ok=True)
    seconds = {}
    sources = {}
    if _R1_ZERO.value:
        sources["r1_zero"] = report.Source(_R1_ZERO.value, config_of(_R1_ZERO.value, "r1_zero"))
    else:
        d = os.path.join(out, "r1_zero")
        sources["r1_zero"] = report.Source(d, ensure_run("r1_zero", d, tiny_config("r1_zero"),
                                                         "results.json"))
        seconds["r1_zero_run"] = round(time.time() - t0, 1)
    if _TTS.value:
        sources["tts"] = report.Source(_TTS.value, config_of(_TTS.value, "test_time_scaling"))
    else:
        t = time.time()
        d = os.path.join(out, "tts")
        c = tiny_config("test_time_scaling")
        if _TTS_BASE.value == "r1_zero":
            c.unlock()
            c.base_workdir = sources["r1_zero"].workdir
            c.lock()
        sources["tts"] = report.Source(d, ensure_run("test_time_scaling", d, c, "results.json"))
        seconds["tts_run"] = round(time.time() - t, 1)
    for key, flag in (("r1", _R1), ("star", _STAR), ("distill", _DISTILL)):
        sources[key] = report.Source(flag.value) if flag.value else None
    built = report.build(out, sources, report.Options(seed=_SEED.value),
                         log=lambda m: print(f"[report] {m}", flush=True))
    seconds.update(report_build=built["seconds"]["total"], total=round(time.time() - t0, 1))
    print(json.dumps(seconds))
    print(f"report: {os.path.join(out, 'index.html')}")


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
