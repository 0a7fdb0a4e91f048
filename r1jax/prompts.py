"""Prompt templates: R1-Zero (full and short), zero-shot and few-shot chain of thought, direct
answer, and chat-template rendering for instruct models (sandboxed jinja2, like HF).

Every template is a `str.format` string with one field, `{question}`. A completion in the R1-Zero
format starts right after the prompt with " <think>" (see `r1_completion`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox

# Our own wording of the R1-Zero instruction: reason privately, then answer, inside tags.
R1_ZERO = (
    "A user and an assistant talk. The user asks a question and the assistant solves it: it "
    "first works through the reasoning, then gives the final answer. The reasoning goes inside "
    "<think> </think> tags and the final answer inside <answer> </answer> tags, like this: "
    "<think> reasoning here </think> <answer> answer here </answer>.\n"
    "User: {question}\nAssistant:"
)
# For the tiny byte-level model: 24 characters around the question.
R1_ZERO_SHORT = "Q: {question}\nthink, then answer\nA:"
ZERO_SHOT_COT = "Q: {question}\nA: Let's think step by step."
DIRECT = "Q: {question}\nA: The answer is"

TEMPLATES: dict[str, str] = {
    "r1_zero": R1_ZERO,
    "r1_zero_short": R1_ZERO_SHORT,
    "zero_shot_cot": ZERO_SHOT_COT,
    "direct": DIRECT,
}


def render(template: str, question: str) -> str:
    """The prompt for `question` under the template named `template` (a key of TEMPLATES)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template].replace("{question}", question)


def r1_completion(reasoning: str, answer: str) -> str:
    """The R1-Zero completion " <think>{reasoning}</think> <answer>{answer}</answer>"."""
    return f" <think>{reasoning}</think> <answer>{answer}</answer>"


def few_shot_cot(question: str, examples: Sequence[tuple[str, str, str]]) -> str:
    """Few-shot chain-of-thought prompt.

    Args:
        question: the question to answer.
        examples: (question, reasoning, answer) triples, e.g. from
            `r1jax.tasks.few_shot_examples` (drawn from the train split).
    Returns:
        "Q: q1\\nA: reasoning1\\nThe answer is a1.\\n\\n…Q: {question}\\nA:".
    """
    shots = [f"Q: {q}\nA: {r}\nThe answer is {a}.\n\n" for q, r, a in examples]
    return "".join(shots) + f"Q: {question}\nA:"


# --------------------------------------------------------------------------------------------
# Chat templates (instruct models)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    # Same settings as Hugging Face transformers, so templates render identically.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env


def render_chat(chat_template: str, messages: Sequence[Mapping[str, str]], *,
                add_generation_prompt: bool = True, **variables) -> str:
    """Render `messages` ([{"role": …, "content": …}, …]) with a jinja chat template string.

    The template runs in jinja2's immutable sandbox (it cannot reach python internals);
    `variables` (e.g. bos_token="<s>") are passed to it. Errors raised by the template
    (`raise_exception`) surface as ValueError.
    """
    for i, message in enumerate(messages):
        if "role" not in message or "content" not in message:
            raise ValueError(f"messages[{i}] needs 'role' and 'content', got {sorted(message)}")
    try:
        template = _environment().from_string(chat_template)
        return template.render(messages=list(messages),
                               add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template failed: {e}") from e


def load_chat_template(path: str) -> str:
    """The "chat_template" string of a tokenizer_config.json (file or its folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": …}, …]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default")
    if not isinstance(template, str):
        raise ValueError(f"{path}: no string 'chat_template' field")
    return template
