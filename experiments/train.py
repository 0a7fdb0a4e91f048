"""Runs one config: `python experiments/train.py --config configs/r1_zero.py:tiny --workdir runs/x`.

Any field can be overridden (`--config.grpo.beta=0.0`); a misspelt field fails with its name.
Starting again with the same --workdir resumes from the last checkpoint. SIGTERM / Ctrl-C
checkpoint and exit with status 75 (run the same command to resume); a crash exits with 1.
The workdir records the resolved config, code and package versions in provenance.json.
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import run_setup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/r1_zero.py:tiny",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    run_setup.log_phases()  # each phase says that it starts, resumes or is reused
    from r1jax import distributed
    from r1jax.recipes import r1_zero
    # Multi-host: R1JAX_* variables, or JAX's own cluster detection (TPU pods, SLURM, Open MPI,
    # Kubernetes, JAX_COORDINATOR_ADDRESS); a no-op on one machine.
    distributed.initialize_distributed()
    if distributed.is_main_process():
        run_setup.prepare_workdir(_CONFIG.value, _WORKDIR.value, sys.argv)
    results = run_setup.run_or_exit(r1_zero.run, _CONFIG.value, _WORKDIR.value)
    print(r1_zero.results_table(results))
    print(f"results: {os.path.join(_WORKDIR.value, 'results.json')}")
    print(json.dumps({k: results[k] for k in ("base_accuracy", "final_accuracy", "format_rate")}))


if __name__ == "__main__":
    __doc__ += "\n" + run_setup.configs_overview()  # --help lists the configs and variants
    app.run(main, flags_parser=run_setup.parse_flags)
