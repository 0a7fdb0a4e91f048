"""The distillation recipe's real-size path on CPU at shrunken sizes: random-weight Hugging Face
teacher and student folders (Qwen2 architecture, one BPE tokenizer) made here, GSM8K-style
JSONL, a few steps of every method."""
import json

import numpy as np
import pytest

from conftest import load_config
from r1jax import data
from r1jax.recipes import distill as recipe

tokenizers = pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SPECIALS = ["<|endoftext|>", "<|im_end|>"]


def _tokenizer(folder, corpus):
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>"}))
    return tok.get_vocab_size()


def _model(folder, vocab, hidden, layers, seed):
    config = transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).float().save_pretrained(
        folder, safe_serialization=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_hf")
    lines = open(data.sample_path("gsm8k"), encoding="utf-8").read().splitlines()
    corpus = [json.loads(l)["question"] + " " + json.loads(l)["answer"] for l in lines if l]
    out = {}
    for name, hidden, layers, seed in (("teacher", 64, 3, 0), ("student", 32, 2, 1)):
        (root / name).mkdir()
        vocab = _tokenizer(root / name, corpus)
        _model(root / name, vocab, hidden, layers, seed)
        out[name] = root / name
    (root / "other").mkdir()
    _tokenizer(root / "other", corpus[::-1][:3])
    _model(root / "other", 320, 32, 1, 2)
    out["other"] = root / "other"
    return out


def _config(folders, teacher="teacher"):
    c = load_config("distill", "qwen2.5-1.5b-to-0.5b")
    c.unlock()
    c.model.path, c.teacher.path = str(folders["student"]), str(folders[teacher])
    c.model.compute_dtype, c.model.remat = "float32", False
    c.task.train_path = c.task.test_path = data.sample_path("gsm8k")
    c.mesh.fsdp = 1
    c.samples.num_problems, c.samples.per_problem = 4, 2
    c.samples.max_new_tokens, c.samples.max_prompt_tokens = 16, 480
    for section in ("sequence", "token"):
        c[section].steps, c[section].batch_size, c[section].warmup_steps = 2, 2, 0
    c.on_policy.steps, c.on_policy.prompts_per_step, c.on_policy.warmup_steps = 2, 2, 0
    c.grpo.steps, c.grpo.prompts_per_step, c.grpo.num_generations = 2, 2, 2
    c.grpo.warmup_steps, c.grpo.grad_accum = 0, 1
    c.eval.num_problems, c.eval.num_samples, c.eval.curve_points = 4, 1, 1
    c.lock()
    return c


def test_real_size_path_runs_every_method(folders, tmp_path):
    results = recipe.run(_config(folders), str(tmp_path), show_progress=False)
    m = results["methods"]
    assert set(m) == set(recipe.METHODS)
    assert results["teacher_params"] > results["student_params"]
    for name in ("grpo", "token", "on_policy"):
        assert m[name]["train_flops"] > 0 and np.isfinite(m[name]["train_flops"])
    assert "token_minus_grpo" in results["paired_differences"]


def test_teacher_with_another_tokenizer_is_refused(folders, tmp_path):
    with pytest.raises(ValueError, match="another tokenizer"):
        recipe.run(_config(folders, "other"), str(tmp_path), show_progress=False)
