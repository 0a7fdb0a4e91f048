"""Exports a checkpoint's parameters to a Hugging Face folder (config.json + safetensors).

  python experiments/export_hf.py --checkpoint_dir=runs/x/grpo --out=hf_out [--step=N]

Any policy checkpoint of r1jax (pretraining, SFT, GRPO, or one written by import_hf.py) stores
its model config. When the run started from a Hugging Face folder (its provenance.json, one
folder above the checkpoints, names `model.path`; or --hf_source), that folder's tokenizer
files and generation_config.json are copied too, so the export loads with
`transformers.AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`.
"""
import json
import os
import shutil

from absl import app, flags, logging

from r1jax import checkpoint, hf, model

_CKPT = flags.DEFINE_string("checkpoint_dir", None, "CheckpointManager folder", required=True)
_OUT = flags.DEFINE_string("out", None, "HF folder to write", required=True)
_STEP = flags.DEFINE_integer("step", None, "step to export (default: newest readable)")
_ARCH = flags.DEFINE_string("architecture", None, "Qwen2ForCausalLM or LlamaForCausalLM")
_SOURCE = flags.DEFINE_string("hf_source", None, "HF folder whose tokenizer files to copy "
                              "(default: model.path in the run's provenance.json)")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "generation_config.json")


def hf_source(checkpoint_dir: str) -> str | None:
    """The HF folder a run started from: `config.model.path` in provenance.json next to (or one
    folder above) the checkpoint folder, or None."""
    for folder in (checkpoint_dir, os.path.dirname(os.path.abspath(checkpoint_dir))):
        path = os.path.join(folder, "provenance.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("config", {}).get("model", {}).get("path") or None
    return None


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    if not os.path.isdir(_CKPT.value):
        raise app.UsageError(f"--checkpoint_dir {_CKPT.value!r} is not a folder")
    with checkpoint.CheckpointManager(_CKPT.value, max_to_keep=None) as ckpt:
        meta = ckpt.read_meta(_STEP.value)
        if meta.get("model_config") is None:
            raise app.UsageError(f"{_CKPT.value}: the checkpoint stores no model_config (a "
                                 "verifier's, or one written before configs were stored)")
        cfg = checkpoint.model_config_from_dict(meta["model_config"])
        restored = ckpt.restore(step=_STEP.value, target={"params": model.param_shapes(cfg)})
    hf.save_hf(restored.params, cfg, _OUT.value, architecture=_ARCH.value)
    source = _SOURCE.value or hf_source(_CKPT.value)
    copied = []
    if source:
        for name in TOKENIZER_FILES:
            if os.path.exists(os.path.join(source, name)):
                shutil.copy2(os.path.join(source, name), os.path.join(_OUT.value, name))
                copied.append(name)
    print(f"exported step {restored.step} of {_CKPT.value} to {_OUT.value}"
          + (f" (with {', '.join(copied)} from {source})" if copied else ""))


if __name__ == "__main__":
    app.run(main)
