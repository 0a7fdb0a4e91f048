"""Prompting, measured: the multi-example corpus option, answer reading, prompts per style,
config validation, and the tiny measurement (slow)."""
import os

import pytest
from conftest import load_config

from r1jax import pretrain, prompts, tasks
from r1jax.recipes import prompting


def test_the_r1_zero_corpus_is_unchanged_by_the_option():
    c = load_config("r1_zero", "tiny")
    assert c.pretrain.style_fewshot == 0.0
    c.pretrain.num_examples = 5000   # the same code path as the full 40,000, in seconds
    assert pretrain.corpus(c) == tasks.base_corpus(
        c.seed, c.pretrain.num_examples, {c.task.name: 1.0}, pretrain.style_mix(c),
        template=c.task.template, difficulty={c.task.name: pretrain.difficulty(c)})


def test_prompting_base_has_multi_example_documents_that_fit():
    c = load_config("prompting", "tiny_fewshot")
    c.pretrain.num_examples = 400
    pairs = pretrain.corpus(c)
    docs = pairs[300:]   # the last quarter: multi-example documents
    assert len(pairs) == 400 and pairs[:300] == pretrain.corpus(_r1_zero_with(300))
    shots = [p.count("Q: ") - 1 for p, _ in docs]
    assert min(shots) == 0 and max(shots) == c.pretrain.fewshot_max_examples - 1
    full = load_config("prompting", "tiny_fewshot")   # its documents: the last quarter
    docs = tasks.few_shot_documents(
        full.seed, full.pretrain.num_examples // 4, full.pretrain.fewshot_max_examples,
        {full.task.name: 1.0}, difficulty={full.task.name: pretrain.difficulty(full)})
    assert max(len(p) + len(q) + 1 for p, q in docs) <= c.pretrain.seq_len
    assert load_config("prompting", "tiny").pretrain.to_dict() == \
        load_config("r1_zero", "tiny").pretrain.to_dict()   # tiny: the R1-Zero base itself


def _r1_zero_with(n):
    c = load_config("r1_zero", "tiny")
    c.pretrain.num_examples = n
    return c


def test_a_document_keeps_one_manner_and_its_answers_are_right():
    docs = tasks.few_shot_documents(3, 300, 4, {"arithmetic": 1.0},
                                    difficulty={"arithmetic": {"digits": (1, 1), "ops": "+"}})
    worked = direct = trigger = 0
    for prompt, completion in docs:
        answers = [a.split("\n\nQ: ")[0] for a in (prompt + completion).split("\nA:")[1:]]
        kinds = {a.startswith(" The answer is") for a in answers}
        assert len(kinds) == 1, (prompt, completion)   # all bare or all worked
        worked += not kinds.pop()
        direct += completion.startswith(" The answer is")
        trigger += completion.startswith(f" {tasks.STEP_BY_STEP}")
        question = prompt.rsplit("Q: ", 1)[1].split("\n")[0]
        assert completion.endswith(f"The answer is {eval(question)}.")
        assert prompt.endswith("\nA:")
    assert 100 < worked < 200 and worked + direct == 300 and 10 < trigger < 60
    with pytest.raises(ValueError, match="max_examples"):
        tasks.few_shot_documents(0, 1, 0)


@pytest.mark.parametrize("style,completion,answer", [
    ("direct", " 24.", "24"), ("direct", " 2.5. Q", "2.5"),
    ("zero_shot_cot", " first 1+2=3\nso 3\nThe answer is 3.\n\nQ:", "3"),
    ("few_shot_2", " first 1+2=3\nThe answer is 3.\nThe answer is 4.", "3"),
    ("r1_zero", " <think>x</think> <answer>7</answer>", "7"),
    ("zero_shot_cot", " first 1+2=3", None)])
def test_final_answer(style, completion, answer):
    assert prompting.final_answer(style, completion) == answer


def test_style_prompts():
    c = load_config("prompting", "tiny")
    shots = prompting.worked_examples(c, 4)
    assert prompting.style_prompt(c, "direct", "1+2", shots) == prompts.render("direct", "1+2")
    assert prompting.style_prompt(c, "r1_zero", "1+2", shots) == \
        prompts.render("r1_zero_short", "1+2")
    four = prompting.style_prompt(c, "few_shot_4", "1+2", shots)
    assert four.count("Q: ") == 5 and four.endswith("Q: 1+2\nA:")
    assert prompting.style_prompt(c, "few_shot_1", "1+2", shots) == \
        prompts.few_shot_cot("1+2", shots[:1])
    for q, _, _ in shots:
        assert tasks.split_of(q) == "train"


@pytest.mark.parametrize("path,value,message", [
    ("prompting.styles", ("direct", "few_shot_0"), r"config.prompting.styles\[1\] must be"),
    ("prompting.styles", ("chatty",), r"config.prompting.styles\[0\] must be"),
    ("prompting.max_new_tokens", 0, "config.prompting.max_new_tokens must be an int > 0"),
    ("eval.num_samples", -1, "config.eval.num_samples must be an int > 0"),
    ("eval.temperature", 0.0, "config.eval.temperature must be > 0"),
    ("task.template", "chatty", "config.task.template must be one of")])
def test_bad_values_fail_before_any_work(tmp_path, path, value, message):
    c = load_config("prompting", "tiny")
    section, name = path.split(".")
    c[section][name] = value
    with pytest.raises(ValueError, match=message):
        prompting.run(c, str(tmp_path), show_progress=False)
    assert not os.listdir(tmp_path)


def test_real_model_variant_names_what_it_needs():
    c = load_config("prompting", "qwen2.5-0.5b")
    with pytest.raises(ValueError, match="config.model.path must be"):
        prompting.check_config(c)
    c.model.path = "/data/qwen"
    with pytest.raises(ValueError, match="config.task.train_path and config.task.test_path"):
        prompting.check_config(c)
    c.task.train_path, c.task.test_path = "a.jsonl", "b.jsonl"
    prompting.check_config(c)


@pytest.mark.slow
def test_prompt_styles_on_the_tiny_base(tmp_path, tiny_base):
    """The R1-Zero tiny base (single-example corpus, no multi-example documents) under every
    style, 100 held-out problems (RESULTS.md). Only the template it was pretrained on works:
    without documents of several examples in a row, few-shot chain of thought, "Let's think
    step by step" and the direct answer are text it never saw."""
    c = load_config("prompting", "tiny")
    c.eval.num_problems = 100
    tiny_base(tmp_path)
    r = prompting.run(c, str(tmp_path), show_progress=False)
    print(prompting.results_table(r))
    styles = r["styles"]
    assert list(styles) == list(c.prompting.styles)
    for s in styles.values():
        assert 0 <= s["accuracy_ci"][0] <= s["accuracy"] <= s["accuracy_ci"][1] <= 1
        assert 0 < s["mean_length"] <= c.prompting.max_new_tokens
    r1 = styles["r1_zero"]
    assert r1["greedy_paired_minus_direct"][1] > 0.05 and r1["greedy_accuracy"] >= 0.12
    assert r1["sampled_paired_minus_direct"][1] > 0.15
    for style in ("direct", "zero_shot_cot", "few_shot_1", "few_shot_2", "few_shot_4"):
        assert styles[style]["accuracy"] <= 0.1 and styles[style]["greedy_accuracy"] <= 0.1
    assert (tmp_path / "results.json").exists()
