"""Prompt templates: R1-Zero (full and short), zero-shot and few-shot chain of thought, direct
answer. (Chat templates of instruct models are rendered by `r1jax.tokenizer.HFTokenizer`.)

Every template is a string with one field, `{question}`, filled by plain substitution (braces
in a question are safe). A completion in the R1-Zero format starts right after the prompt with
" <think>" (see `r1_completion`).
"""
from __future__ import annotations

from collections.abc import Sequence

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
# For non-reasoning questions of the tiny model (R1's stage 3-5 data): answered at once.
AT_ONCE_SHORT = "Q: {question}\nanswer at once\nA:"
# The question is the whole prompt, already rendered (a batch mixing prompts of several
# templates, as R1's final RL stage does).
PLAIN = "{question}"

TEMPLATES: dict[str, str] = {
    "r1_zero": R1_ZERO,
    "r1_zero_short": R1_ZERO_SHORT,
    "zero_shot_cot": ZERO_SHOT_COT,
    "direct": DIRECT,
    "at_once_short": AT_ONCE_SHORT,
    "plain": PLAIN,
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
