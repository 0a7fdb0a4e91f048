"""The R1 recipe: config validation (fast), and the five stages on the shared tiny base against
the shared R1-Zero run (slow): stage structure, language consistency, accuracy, resume."""
import json
import os

import pytest

from conftest import config_with, load_config
from r1jax.recipes import r1


@pytest.mark.parametrize("path,value,message", [
    ("reasoning_rl.steps", 0, "config.reasoning_rl.steps must be an int > 0"),
    ("final_rl.language_weight", -1.0, "config.final_rl.language_weight must be >= 0"),
    ("final_rl.nonreasoning_share", 1.0, "config.final_rl.nonreasoning_share must be in [0, 1)"),
    ("rejection.min_language", 1.5, "config.rejection.min_language must be in [0, 1]"),
    ("language", "de", "config.language must be one of"),
    ("nonreasoning.template", "nope", "config.nonreasoning.template must be one of"),
    ("r1_zero_workdir", "/nonexistent", "config.r1_zero_workdir must be a finished R1-Zero"),
    ("resume_from.stage", "stage9", "config.resume_from.stage must be one of"),
    ("cold_start.path", "/nonexistent.jsonl", "config.cold_start.path must be an existing file"),
    ("orm_ablation.steps", 0, "config.orm_ablation.steps must be an int > 0"),
    ("orm_ablation.rl_steps", -1, "config.orm_ablation.rl_steps must be an int >= 0"),
    ("final_rl.advantage_scale", "std", "config.final_rl.advantage_scale must be one of"),
])
def test_bad_values_fail_naming_their_field(path, value, message, tmp_path):
    c = config_with("r1", "tiny", **{path: value})
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        r1.run(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()   # failed before any work


def test_variants_and_steps_to_reach():
    for variant in ("tiny", "qwen2.5-0.5b", "qwen2.5-1.5b"):
        c = load_config("r1", variant)
        assert c.final_rl.require_summary and c.reasoning_rl.language_weight > 0
    with pytest.raises(ValueError, match="unknown r1 variant"):
        load_config("r1", "big")
    curve = [[0, 0.2, 0.1], [10, 0.85, 0.5], [5, 0.7, 0.4], [20, 0.9, 0.6]]
    assert r1.steps_to_reach(curve, 0.8) == 10 and r1.steps_to_reach(curve, 0.95) is None
    assert r1.steps_to_reach(curve, 0.1) == 0


def test_orm_curve_reads_the_ablation_rows_last_write_wins(tmp_path):
    from r1jax.reporting import MetricWriter
    w = MetricWriter(str(tmp_path), tensorboard=False)
    w.write(1, {"reward": 0.4, "accuracy": 0.2}, "orm_ablation")
    w.write(2, {"reward": 0.5, "accuracy": 0.3, "eval_greedy_accuracy": 0.25,
                "eval_accuracy": 0.2}, "orm_ablation")
    w.write(2, {"reward": 0.6, "accuracy": 0.3}, "orm_ablation")    # resumed: step 2 again
    w.write(2, {"reward": 9.0}, "final_rl")                            # another stage
    w.write(3, {"reward": 0.7, "accuracy": 0.1}, "orm_ablation")
    w.close()
    base = {"greedy_accuracy": 0.24, "accuracy": 0.3}
    record = {"rl_steps": 3, "greedy_accuracy": 0.1, "accuracy": 0.15}
    assert r1.orm_curve(str(tmp_path), base, record) == [
        [0, None, None, 0.24, 0.3], [1, 0.4, 0.2, None, None], [2, 0.6, 0.3, None, None],
        [3, 0.7, 0.1, 0.1, 0.15]]


# Sized to what the assertions need: a shorter reasoning RL and final RL than the tiny config,
# fewer held-out samples; 100 SFT steps on 300 non-reasoning examples in the union (all 568 at 60
# steps left the final format rate at 0.745); the R1-Zero side is the shared fixture (40 GRPO
# steps).
SMALL = {"reasoning_rl.steps": 10, "final_rl.steps": 6, "rejection.num_problems": 128,
         "sft.steps": 100, "nonreasoning.num_train": 300, "reward_model.steps": 40,
         "eval.num_samples": 2,
         "eval.num_nonreasoning": 60, "eval.every": 5, "orm_ablation.rl_steps": 4,
         "orm_ablation.num_problems": 64, "orm_ablation.steps": 20}
ACCURACY_MARGIN = 0.15   # final greedy accuracy >= R1-Zero's - this


@pytest.mark.slow
def test_r1_five_stages_against_r1_zero(tiny_base, tiny_r1_zero, tmp_path):
    work = tmp_path / "r1"
    tiny_base(work)
    c = config_with("r1", "tiny", r1_zero_workdir=str(tiny_r1_zero), **SMALL)
    res = r1.run(c, str(work), show_progress=False)
    names = [s["name"] for s in res["stages"]]
    assert names == list(r1.STAGES)
    for s in res["stages"]:
        for k in ("accuracy", "greedy_accuracy", "format_rate", "language_consistency",
                  "summary_rate", "non_reasoning_score", "mean_length"):
            assert isinstance(s[k], float) and len(s[f"{k}_ci"]) == 2, (s["name"], k)
            lo, hi = s[f"{k}_ci"]
            assert lo - 1e-9 <= s[k] <= hi + 1e-9, (s["name"], k)
        assert os.path.isfile(work / f"{r1.STAGES.index(s['name']) + 1}_{s['name']}"
                              / "record.json")
    stages = {s["name"]: s for s in res["stages"]}
    final, zero = stages["final_rl"], res["r1_zero"]
    # R1's point: readable, consistent reasoning, at an accuracy near R1-Zero's
    assert final["language_consistency"] >= 0.98
    assert final["language_consistency"] > zero["language_consistency"]
    assert final["greedy_accuracy"] >= zero["greedy_accuracy"] - ACCURACY_MARGIN
    assert final["summary_rate"] >= 0.8 and final["format_rate"] >= 0.8
    # the cold start alone (0 RL steps) already reasons in the R1 format, in English
    assert stages["cold_start"]["summary_rate"] >= 0.9
    assert stages["cold_start"]["language_consistency"] >= 0.98
    counts = res["rejection_counts"]
    assert counts["kept"] == stages["rejection_sampling"]["reasoning_examples"] > 0
    assert sum(counts[k] for k in ("kept",) + r1.rejection.REASONS) == counts["samples"]
    assert res["reward_model"]["pairwise_accuracy"] >= 0.7
    assert res["rl_curve"]["r1"][0][0] == 0 and len(res["rl_curve"]["r1_zero"]) >= 2
    assert "final_minus_r1_zero" in res    # same held-out problems: paired difference
    # stage 5 against stage 4 on the same reasoning problems and non-reasoning questions
    diff = res["stage5_minus_stage4"]
    assert set(diff) == {"greedy", "sampled", "non_reasoning_greedy", "non_reasoning_sampled"}
    assert all(lo <= d <= hi for d, lo, hi in diff.values())
    assert len(final["per_problem"]["non_reasoning_sampled"]) == SMALL["eval.num_nonreasoning"]
    # the ablation: GRPO on a learned ORM's score, the rule checker only watching
    abl = res["orm_ablation"]
    assert abl["rl_steps"] == 4 and abl["orm"]["num_train"] == 52 * 4
    assert abl["orm"]["num_test"] == 12 * 4 and 0 <= abl["orm"]["test_accuracy"] <= 1
    assert [row[0] for row in abl["curve"]] == [0, 1, 2, 3, 4]
    assert all(0 <= row[1] <= 1 and 0 <= row[2] <= 1 for row in abl["curve"][1:])
    assert abl["curve"][-1][3] == abl["greedy_accuracy"]
    for png in ("r1_stages.png", "r1_rl_curve.png", "reasoning_rl_training.png",
                "r1_orm_ablation.png"):
        assert (work / png).stat().st_size > 0

    # a second run in the same workdir reads every stage back: the same results
    again = r1.run(c, str(work), show_progress=False)
    assert [s["greedy_accuracy"] for s in again["stages"]] == \
        [s["greedy_accuracy"] for s in res["stages"]]
    # start from another run's last stage: everything copied, nothing trained again
    c2 = config_with("r1", "tiny", r1_zero_workdir=str(tiny_r1_zero),
                     **{"resume_from.workdir": str(work), "resume_from.stage": "final_rl"},
                     **SMALL)
    other = r1.run(c2, str(tmp_path / "r1b"), show_progress=False)
    assert [s["language_consistency"] for s in other["stages"]] == \
        [s["language_consistency"] for s in res["stages"]]
    with open(work / "results.json") as f:
        assert json.load(f)["stages"][0]["name"] == "cold_start"


def _random_qwen2_folder(path, corpus):
    """A random-weight Hugging Face Qwen2 folder (2 layers, d_model 32) with a byte-level BPE
    tokenizer trained on `corpus`."""
    import tokenizers
    import torch
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    path.mkdir()
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False}))
    config = transformers.Qwen2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).float().save_pretrained(
        str(path), safe_serialization=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["qwen2.5-0.5b", "qwen2.5-1.5b"])
def test_real_scale_variants_run_every_stage_at_a_shrunken_size(variant, tmp_path):
    """The real-scale path (a local HF folder, GSM8K JSONL, a cold-start JSONL) runs all five
    stages and R1-Zero, a step or two each, on a random-weight model."""
    from r1jax import data, prompts, r1_data
    gsm8k = data.sample_path("gsm8k")
    problems = data.load_jsonl(gsm8k, "gsm8k").problems
    cold = tmp_path / "cold.jsonl"
    cold.write_text("".join(json.dumps({"question": p.question,
                                        "reasoning": p.metadata["rationale"],
                                        "answer": p.answer}) + "\n" for p in problems))
    corpus = [prompts.render("r1_zero", p.question) + r1_data.r1_completion(
        p.metadata["rationale"], r1_data.summary_line(p.answer), p.answer) for p in problems]
    corpus += [e["prompt"] + e["completion"]
               for e in r1_data.nonreasoning_examples(r1_data.nonreasoning_problems(0, 200))]
    _random_qwen2_folder(tmp_path / "hf", corpus)
    c = load_config("r1", variant)
    c.unlock()
    c.model.path = str(tmp_path / "hf")
    c.model.compute_dtype = "float32"
    c.task.train_path = c.task.test_path = gsm8k
    c.cold_start.path = str(cold)
    c.mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    for g in (c.reasoning_rl, c.final_rl):
        g.steps, g.prompts_per_step, g.num_generations, g.max_new_tokens = 2, 2, 2, 8
        g.max_prompt_tokens, g.grad_accum = 192, 1
    c.cold_start.steps = c.sft.steps = c.reward_model.steps = 2
    c.cold_start.batch_size = c.sft.batch_size = c.reward_model.batch_size = 2
    c.rejection.num_problems, c.rejection.samples_per_problem = 3, 2
    c.nonreasoning.num_train = 8
    c.eval.num_problems, c.eval.num_samples, c.eval.num_nonreasoning, c.eval.every = 3, 1, 4, 0
    c.r1_zero_steps = 1
    c.orm_ablation.rl_steps, c.orm_ablation.num_problems = 1, 5
    c.orm_ablation.samples_per_problem = c.orm_ablation.steps = c.orm_ablation.batch_size = 2
    c.lock()
    res = r1.run(c, str(tmp_path / "w"), show_progress=False)
    assert [s["name"] for s in res["stages"]] == list(r1.STAGES)
    assert res["r1_zero"]["rl_steps"] == 1 and res["r1_zero"]["source"] == "this run"
    assert res["reward_model"]["num_pairs"] == 3 * 4
    assert res["stages"][0]["train_examples"] == len(problems)
    assert res["orm_ablation"]["orm"]["num_train"] == 4 * 2
