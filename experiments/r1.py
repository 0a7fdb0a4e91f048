"""Runs DeepSeek-R1's five stages: `python experiments/r1.py --config configs/r1.py:tiny
--workdir runs/r1`.

Any field can be overridden (`--config.reasoning_rl.language_weight=0`); a misspelt field fails
with its name. Starting again with the same --workdir resumes: finished stages are read back, an
unfinished one resumes from its checkpoint. A base already pretrained with the same config (an
R1-Zero tiny run's `base/`) is reused when copied to `<workdir>/base`; `--config.r1_zero_workdir`
names the R1-Zero run to compare with (with none, R1-Zero runs here from the same base).
"""
from absl import app

import run_setup

_CONFIG, _WORKDIR = run_setup.define_config_flags("configs/r1.py:tiny")


def main(argv):
    del argv
    run_setup.run_recipe("r1", _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
