"""Imports a Hugging Face folder into a checkpoint (params and model config, at a step).

  python experiments/import_hf.py --hf_dir=Qwen2.5-0.5B --checkpoint_dir=runs/base [--step=0]
"""
from absl import app, flags, logging

from r1jax import checkpoint, hf

_HF_DIR = flags.DEFINE_string("hf_dir", None, "HF folder: config.json + *.safetensors",
                              required=True)
_CKPT = flags.DEFINE_string("checkpoint_dir", None, "CheckpointManager folder to write",
                            required=True)
_STEP = flags.DEFINE_integer("step", 0, "step number to save the parameters under")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    cfg, params = hf.load_hf(_HF_DIR.value)
    with checkpoint.CheckpointManager(_CKPT.value, max_to_keep=None) as ckpt:
        ckpt.save(_STEP.value, params=params, model_config=cfg, force=True)
        ckpt.wait()
    print(f"imported {_HF_DIR.value} ({cfg.num_params():,} parameters) into "
          f"{_CKPT.value} step {_STEP.value}")


if __name__ == "__main__":
    app.run(main)
