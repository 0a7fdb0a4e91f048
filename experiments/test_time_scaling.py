"""Runs the test-time scaling experiment:
`python experiments/test_time_scaling.py --config configs/test_time_scaling.py:tiny --workdir runs/tts`

Writes results.json, results.md (table) and tts.png (accuracy vs generated tokens) to --workdir.
Any field can be overridden (`--config.tts.budgets='(1, 4, 16)'`); --config.base_workdir=DIR
reuses the pretrained base model in DIR/base (e.g. an r1_zero run's workdir).
"""
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/test_time_scaling.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results, the table and the plot go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    from r1jax.recipes import test_time_scaling as scaling
    results = scaling.run(_CONFIG.value, _WORKDIR.value)
    print(scaling.results_table(results))
    print(f"results: {os.path.join(_WORKDIR.value, 'results.json')}")


if __name__ == "__main__":
    app.run(main)
