"""Runs the prompting measurement:
`python experiments/prompting.py --config configs/prompting.py:tiny --workdir runs/prompting`.

Any field can be overridden (`--config.eval.num_problems=100`); a misspelt field fails with its
name. The tiny base is pretrained into `<workdir>/base` (reused when already there: copy an
R1-Zero tiny run's `base/` there for the `tiny` variant).
"""
from absl import app

import run_setup

_CONFIG, _WORKDIR = run_setup.define_config_flags("configs/prompting.py:tiny")


def main(argv):
    del argv
    run_setup.run_recipe("prompting", _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
