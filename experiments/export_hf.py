"""Exports a checkpoint's parameters to a Hugging Face folder (config.json + safetensors).

  python experiments/export_hf.py --checkpoint_dir=runs/x/checkpoints --out=hf_out [--step=N]
"""
from absl import app, flags

from r1jax import checkpoint, hf, model

_CKPT = flags.DEFINE_string("checkpoint_dir", None, "CheckpointManager folder", required=True)
_OUT = flags.DEFINE_string("out", None, "HF folder to write", required=True)
_STEP = flags.DEFINE_integer("step", None, "step to export (default: newest readable)")
_ARCH = flags.DEFINE_string("architecture", None, "Qwen2ForCausalLM or LlamaForCausalLM")


def main(argv):
    del argv
    with checkpoint.CheckpointManager(_CKPT.value, max_to_keep=None) as ckpt:
        meta = ckpt.read_meta(_STEP.value)
        if meta.get("model_config") is None:
            raise ValueError(f"{_CKPT.value}: the checkpoint stores no model_config to export")
        cfg = checkpoint.model_config_from_dict(meta["model_config"])
        restored = ckpt.restore(step=_STEP.value, target={"params": model.param_shapes(cfg)})
    hf.save_hf(restored.params, cfg, _OUT.value, architecture=_ARCH.value)
    print(f"exported step {restored.step} of {_CKPT.value} to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
