"""Runs STaR: `python experiments/star.py --config configs/star.py:tiny --workdir runs/star`.

Any field can be overridden (`--config.star.iterations=5`); a misspelt field fails with its
name. Starting again with the same --workdir resumes: finished iterations are read back, an
unfinished fine-tuning resumes from its checkpoint. A base already pretrained with the same
config (e.g. an R1-Zero tiny run's `base/`) is reused when copied to `<workdir>/base`.
"""
from absl import app

import run_setup

_CONFIG, _WORKDIR = run_setup.define_config_flags("configs/star.py:tiny")


def main(argv):
    del argv
    run_setup.run_recipe("star", _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
