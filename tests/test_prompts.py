"""Prompt templates."""
import pytest

from r1jax import prompts, rewards, tasks


def test_templates_render_the_question():
    q = "7+3*4-2"
    r1 = prompts.render("r1_zero", q)
    assert r1.endswith(f"User: {q}\nAssistant:")
    assert "<think>" in r1 and "<answer>" in r1
    short = prompts.render("r1_zero_short", q)
    assert q in short and len(short) - len(q) < 40
    assert prompts.render("zero_shot_cot", q).endswith("Let's think step by step.")
    assert prompts.render("direct", q) == f"Q: {q}\nA: The answer is"
    with pytest.raises(ValueError, match="template"):
        prompts.render("socratic", q)
    # a question with braces renders verbatim (no str.format surprises)
    assert "{x}" in prompts.render("r1_zero", "{x}+1")


def test_r1_completion_is_well_formatted():
    completion = prompts.r1_completion("first 1+1=2\nso 2", "2")
    assert completion.startswith(" <think>")
    assert rewards.format_reward(completion) == 1.0
    assert rewards.accuracy_reward(completion, "2") == 1.0


def test_few_shot_cot_from_train_split():
    shots = tasks.few_shot_examples("arithmetic", 3, seed=1)
    prompt = prompts.few_shot_cot("5*6-1", shots)
    blocks = prompt.split("\n\n")
    assert len(blocks) == 4 and blocks[-1] == "Q: 5*6-1\nA:"
    for block, (q, reasoning, answer) in zip(blocks, shots):
        assert block == f"Q: {q}\nA: {reasoning}\nThe answer is {answer}."
    assert prompts.few_shot_cot("q", []) == "Q: q\nA:"
