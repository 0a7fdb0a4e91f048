"""Runs distillation of a teacher into a smaller student, against GRPO on the student:

  python experiments/distill.py --config configs/distill.py:tiny --workdir runs/distill \
      --config.teacher.r1_zero_workdir=runs/demo

(`runs/demo`: an R1-Zero tiny run of experiments/train.py.)
Any field can be overridden (`--config.on_policy.loss=jsd`); a misspelt field fails with its
name. Starting again with the same --workdir resumes: finished methods are read back, an
unfinished training resumes from its checkpoint, the student base and the teacher's samples
are reused.
"""
from absl import app

import run_setup

_CONFIG, _WORKDIR = run_setup.define_config_flags("configs/distill.py:tiny")


def main(argv):
    del argv
    run_setup.run_recipe("distill", _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=run_setup.parse_flags)
