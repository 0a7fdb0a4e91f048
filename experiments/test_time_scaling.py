"""Runs the test-time scaling experiment:
`python experiments/test_time_scaling.py --config configs/test_time_scaling.py:tiny --workdir runs/tts`

Writes results.json, results.md (table) and tts.png (accuracy vs generated tokens) to --workdir.
Any field can be overridden (`--config.tts.budgets='(1, 4, 16)'`); --config.base_workdir=DIR
reuses the pretrained base model in DIR/base (e.g. an r1_zero run's workdir). Preemption exits
with status 75 (run the same command to resume); provenance.json records the run.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import run_setup

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/test_time_scaling.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results, the table and the plot go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    run_setup.log_phases()
    from r1jax.recipes import test_time_scaling as scaling
    run_setup.prepare_workdir(_CONFIG.value, _WORKDIR.value, sys.argv)
    results = run_setup.run_or_exit(scaling.run, _CONFIG.value, _WORKDIR.value)
    print(scaling.results_table(results))
    print(f"results: {os.path.join(_WORKDIR.value, 'results.json')}")


if __name__ == "__main__":
    __doc__ += "\n" + run_setup.configs_overview()  # --help lists the configs and variants
    app.run(main, flags_parser=run_setup.parse_flags)
