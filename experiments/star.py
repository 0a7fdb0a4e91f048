"""Runs STaR: `python experiments/star.py --config configs/star.py:tiny --workdir runs/star`.

Any field can be overridden (`--config.star.iterations=5`); a misspelt field fails with its
name. Starting again with the same --workdir resumes: finished iterations are read back, an
unfinished fine-tuning resumes from its checkpoint. A base already
pretrained with the same config (e.g. an R1-Zero tiny run's `base/`) is reused when copied to
`<workdir>/base`.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import run_setup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/star.py:tiny",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)
    from r1jax.recipes import star
    run_setup.prepare_workdir(_CONFIG.value, _WORKDIR.value, sys.argv)
    results = run_setup.run_or_exit(star.run, _CONFIG.value, _WORKDIR.value)
    print(star.results_table(results))
    print(f"results: {os.path.join(_WORKDIR.value, 'results.json')}")


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
