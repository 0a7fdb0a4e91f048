"""Prompt templates and chat-template rendering (checked against transformers)."""
import pytest

from r1jax import prompts, rewards, tasks

QWEN_LIKE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role ' + m['role']) }}{% endif %}\n"
    "  {{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim"
    " + '<|eot_id|>' }}\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
MESSAGES = [{"role": "user", "content": "What is 2+3*4?"},
            {"role": "assistant", "content": " 14 "},
            {"role": "user", "content": "And 3*4+2?"}]


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


@pytest.mark.parametrize("template, variables", [(QWEN_LIKE, {}),
                                                  (LLAMA_LIKE, {"bos_token": "<s>"})])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_render_chat_matches_transformers(template, variables, add_generation_prompt):
    import tokenizers
    import transformers
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "<s>": 1},
                                                               unk_token="<unk>"))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **variables)
    hf.chat_template = template
    expected = hf.apply_chat_template(MESSAGES, tokenize=False,
                                      add_generation_prompt=add_generation_prompt)
    got = prompts.render_chat(template, MESSAGES, add_generation_prompt=add_generation_prompt,
                              **variables)
    assert got == expected


def test_render_chat_errors_and_sandbox():
    with pytest.raises(ValueError, match="bad role tool"):
        prompts.render_chat(LLAMA_LIKE, [{"role": "tool", "content": "x"}], bos_token="")
    with pytest.raises(ValueError, match="messages\\[0\\]"):
        prompts.render_chat(QWEN_LIKE, [{"content": "x"}])
    with pytest.raises(ValueError, match="chat template"):
        prompts.render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", MESSAGES)
    with pytest.raises(ValueError, match="chat template"):
        prompts.render_chat("{% for %}", MESSAGES)
