"""Rule rewards: hand-written cases for each reward, fuzzing with hypothesis, bounded time."""
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1jax import rewards
from r1jax.rewards import (accuracy_reward, extract_answer, format_reward,
                           format_reward_partial, language_consistency_reward)


# ----------------------------------------------------------------------------------------------
# extract_answer


@pytest.mark.parametrize("text, expected", [
    ("<think>x</think> <answer>42</answer>", "42"),
    ("<answer> 7 </answer>", "7"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),
    ("<answer>1</answer> then <answer>2", "1"),  # the last complete block
    ("<answer>2", None),
    ("2</answer>", None),
    ("no tags", None),
    ("", None),
    ("<answer></answer>", ""),
    ("</answer><answer>3</answer>", "3"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# ----------------------------------------------------------------------------------------------
# format


@pytest.mark.parametrize("text, expected", [
    ("<think>a</think><answer>b</answer>", 1.0),
    (" <think>first 1+2=3\nso 3</think> <answer>3</answer>", 1.0),
    ("\n<think></think>\n\n<answer>3</answer>\n", 1.0),  # empty reasoning is allowed
    ("<think>a</think><answer> </answer>", 0.0),  # empty answer is not
    ("<think>a</think>x<answer>b</answer>", 0.0),  # text between the blocks
    ("hi <think>a</think><answer>b</answer>", 0.0),  # text before
    ("<think>a</think><answer>b</answer>.", 0.0),  # text after
    ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
    ("<think>a<think>b</think><answer>c</answer>", 0.0),  # nested tag
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),  # two answers
    ("<think>a</think><answer>b", 0.0),  # truncated
    ("<think>a", 0.0),
    ("<think>a</think>", 0.0),
    ("<answer>b</answer>", 0.0),
    ("The answer is 3", 0.0),
    ("", 0.0),
])
def test_format_reward(text, expected):
    assert format_reward(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<think>a</think> <answer>b</answer>", 1.0),
    ("<think>a</think> x <answer>b</answer>", 0.75),  # blocks right, text between
    ("<answer>b</answer> <think>a</think>", 0.5),  # both blocks, wrong order
    ("<think>a</think> answer: b", 0.25),
    ("<answer>b</answer>", 0.25),
    ("<think>a", 0.0),
    ("plain text", 0.0),
])
def test_format_reward_partial(text, expected):
    assert format_reward_partial(text) == expected


# ----------------------------------------------------------------------------------------------
# accuracy


def _a(x):
    return f"<think>t</think> <answer>{x}</answer>"


@pytest.mark.parametrize("predicted, gold, expected", [
    ("1000", "1000", 1.0),
    ("1,000", "1000", 1.0),
    ("1000.0", "1,000", 1.0),
    ("1,234,567.50", "1234567.5", 1.0),
    ("-12", "-12", 1.0),
    ("\u221212", "-12.0", 1.0),  # the minus sign U+2212
    ("-12", "12", 0.0),
    ("3/4", "0.75", 1.0),
    ("\\frac{3}{4}", "0.75", 1.0),
    ("\\dfrac{3}{4}", "3/4", 1.0),
    ("-\\frac{1}{2}", "-0.5", 1.0),
    ("6/8", "3/4", 1.0),
    ("\\boxed{17}", "17", 1.0),
    ("\\boxed{\\frac{1}{3}}", "1/3", 1.0),
    ("$42$", "42", 1.0),
    ("42.", "42", 1.0),
    (".5", "0.5", 1.0),
    ("1/0", "1/0", 1.0),  # not a number: compared as strings
    ("1/0", "0", 0.0),
    ("1,00", "100", 0.0),  # not a thousands separator
    ("x + 1", "x+1", 1.0),  # symbolic answers: normalised strings
    ("\\left(1, 2\\right)", "(1,2)", 1.0),
    ("x+1", "1+x", 0.0),  # never evaluated
    ("__import__('os')", "0", 0.0),
    ("1e3", "1000", 0.0),  # no exponent notation (would allow huge numbers)
    ("41", "42", 0.0),
    ("", "42", 0.0),
])
def test_accuracy_reward(predicted, gold, expected):
    assert accuracy_reward(_a(predicted), gold) == expected


def test_accuracy_reward_needs_answer_tags():
    assert accuracy_reward("The answer is 42", "42") == 0.0
    assert accuracy_reward("<answer>41</answer> <answer>42</answer>", "42") == 1.0


def test_canonical_answer():
    assert rewards.canonical_answer("1,000") == "1000"
    assert rewards.canonical_answer("-0.25") == "-1/4" and rewards.answers_equal("-0.25", "-1/4")
    assert rewards.canonical_answer("x") == "x"  # not a number: the normalised string
    long = "9" * 101  # too long to parse: compared as a string
    assert rewards.canonical_answer(long) == long and not rewards.answers_equal(long, long + ".0")
    assert rewards.answers_equal("9" * 98, "9" * 98 + ".0")  # 100 characters: still parsed
    assert rewards.canonical_answer("2/4") == rewards.canonical_answer("0.5") == "1/2"
    assert rewards.last_boxed("a \\boxed{x^{2}} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert rewards.last_boxed("\\boxed{unclosed") is None


# ----------------------------------------------------------------------------------------------
# language consistency


@pytest.mark.parametrize("text, lang, expected", [
    ("<think>first 1+2=3\nthen 3*4=12\nso 12</think><answer>12</answer>", "en", 1.0),
    ("<think>first 1+2=3\nthen 3*4=12\nso 12</think><answer>12</answer>", "fr", 0.0),
    ("<think>d'abord 1+2=3\npuis 3*4=12\ndonc 12</think><answer>12</answer>", "fr", 1.0),
    ("<think>first 1+2=3\npuis 3*4=12\ndonc 12</think><answer>12</answer>", "en", 1 / 3),
    ("<think>first then puis donc</think> <answer>so so so</answer>", "en", 0.5),  # <think> only
    ("<think>1+2=3 xyzzy</think><answer>3</answer>", "en", 1.0),  # no classifiable word
    ("<think></think><answer>3</answer>", "fr", 1.0),
    ("first then donc", "en", 2 / 3),  # no tags: the whole text
    ("<think>then puis", "fr", 0.5),  # unclosed: to the end
    ("<think>THEN Then</think>", "en", 1.0),  # case-insensitive
    ("<think>plus total distance</think>", "fr", 1.0),  # words of both languages: ignored
])
def test_language_consistency_reward(text, lang, expected):
    assert language_consistency_reward(text, lang) == pytest.approx(expected)


def test_language_consistency_rejects_unknown_language():
    with pytest.raises(ValueError, match="lang"):
        language_consistency_reward("<think>x</think>", "de")


# ----------------------------------------------------------------------------------------------
# length, repetition


def test_cosine_length_reward():
    f = rewards.cosine_length_reward
    assert f(0, True, 100) == pytest.approx(2.0)
    assert f(100, True, 100) == pytest.approx(1.0)
    assert f(50, True, 100) == pytest.approx(1.5)
    assert f(0, False, 100) == pytest.approx(-10.0)
    assert f(100, False, 100) == pytest.approx(0.0)
    assert f(25, False, 100) == pytest.approx(-10 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(101, True, 100) == -10.0
    assert f(10, True, 100) > f(20, True, 100)  # shorter correct answers earn more
    assert f(10, False, 100) < f(20, False, 100)  # longer wrong answers are punished less
    with pytest.raises(ValueError, match="max_length"):
        f(1, True, 0)


def test_repetition_penalty():
    f = rewards.repetition_penalty
    assert f("a b c d e") == 0.0
    assert f("a b") == 0.0
    # "a b a b a b": 3-grams (a b a), (b a b), (a b a), (b a b) -> 2 distinct of 4
    assert f("a b a b a b") == pytest.approx(-0.5)
    assert f("x " * 100, ngram_size=1, max_penalty=2.0) == pytest.approx(-2.0 * 99 / 100)
    with pytest.raises(ValueError, match="ngram_size"):
        f("a", ngram_size=0)


# ----------------------------------------------------------------------------------------------
# fuzzing: arbitrary strings never raise and stay in range (4 x 2,500 + 1,000 examples)

_TAGS = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "{", "}", "/", ",", ".",
         "-", "1", "0", "\\frac{", " ", "\n", "then", "puis"]
_tagged = st.lists(st.one_of(st.sampled_from(_TAGS), st.text(max_size=6)), max_size=24).map(
    "".join)
_fuzz = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))


def _check_all(text, gold):
    assert extract_answer(text) is None or isinstance(extract_answer(text), str)
    assert format_reward(text) in (0.0, 1.0)
    partial = format_reward_partial(text)
    assert partial in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert (partial == 1.0) == (format_reward(text) == 1.0)
    assert accuracy_reward(text, gold) in (0.0, 1.0)
    for lang in ("en", "fr"):
        assert 0.0 <= language_consistency_reward(text, lang) <= 1.0
    assert -1.0 <= rewards.repetition_penalty(text) <= 0.0
    assert rewards.answers_equal(gold, gold)


@_fuzz
@given(st.text(), st.text(max_size=20))
def test_fuzz_unicode(text, gold):
    _check_all(text, gold)


@_fuzz
@given(_tagged, _tagged)
def test_fuzz_tag_soup(text, gold):
    _check_all(text, gold)


@_fuzz
@given(_tagged, st.integers(1, 100))
def test_fuzz_long_repeated(text, times):
    _check_all(text * times, text)


@_fuzz
@given(st.text(max_size=30), st.text(max_size=30), st.booleans(), st.integers(0, 60))
def test_fuzz_wrapped_and_truncated(reasoning, answer, truncate, cut):
    text = f"<think>{reasoning}</think> <answer>{answer}</answer>"
    if truncate:
        text = text[:cut]
    _check_all(text, answer)
    if not truncate and answer.strip() and all(t not in reasoning + answer for t in _TAGS[:4]):
        assert format_reward(text) == 1.0
        assert accuracy_reward(text, answer) == 1.0


@settings(max_examples=1000, deadline=None)
@given(st.integers(-10**12, 10**12), st.integers(1, 10**6))
def test_fuzz_numbers_equal_their_renderings(n, d):
    assert accuracy_reward(_a(f"{n:,}"), str(n)) == 1.0
    assert accuracy_reward(_a(f"{n}.0"), f"{n:,}") == 1.0
    assert accuracy_reward(_a(f"{n}/{d}"), f"\\frac{{{n}}}{{{d}}}") == 1.0
    assert accuracy_reward(_a(str(n + 1)), str(n)) == 0.0


# ----------------------------------------------------------------------------------------------
# bounded time on adversarial 100k-character inputs


@pytest.mark.parametrize("text", [
    "<answer>" * 12_500,
    "<think>" * 14_000 + "</answer>",
    "\\boxed{" * 14_000,
    "1," * 50_000,
    "{" * 100_000,
    "a" * 100_000,
    "<answer>" + "1," * 50_000 + "</answer>",
    "<answer>\\boxed{" + "{" * 99_000 + "</answer>",
    "first puis " * 9_000,
])
def test_bounded_time_on_long_inputs(text):
    start = time.perf_counter()
    _check_all(text, text[:1000])
    accuracy_reward(text, text)
    assert time.perf_counter() - start < 0.5


# ----------------------------------------------------------------------------- math-verify

LATEX_EQUAL = [("\\dfrac12", "1/2"), ("\\frac{1}{2}", "0.5"), ("x=3", "3"), ("\\$5", "5"),
               ("10^{3}", "1000"), ("3\\frac{1}{2}", "7/2"), ("\\sqrt{8}", "2\\sqrt{2}"),
               ("\\{1,2\\}", "\\{2,1\\}"), ("1,2", "2,1"), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
               ("2\\pi", "2\\pi"), ("50\\%", "50"), ("\\text{(A)}", "A"), ("(1,2)", "(1, 2)"),
               ("\\infty", "\\infty"), ("-\\frac{1}{3}", "-1/3"), ("3.0", "3"),
               ("1{,}000", "1000"), ("x^2+2x", "2x+x^2"), ("\\boxed{5}", "5"),
               ("\\pi/2", "\\frac{\\pi}{2}")]
LATEX_DIFFERENT = [("4", "5"), ("\\frac12", "1/3"), ("\\sqrt{8}", "2\\sqrt{3}"),
                   ("\\{1,2\\}", "\\{1,3\\}"), ("x=3", "4")]


@pytest.mark.parametrize("predicted, gold", LATEX_EQUAL)
def test_math_verify_accepts_equivalent_latex(predicted, gold):
    assert rewards.answers_match(predicted, gold, "math_verify")


@pytest.mark.parametrize("predicted, gold", LATEX_DIFFERENT)
def test_math_verify_rejects_different_answers(predicted, gold):
    assert not rewards.answers_match(predicted, gold, "math_verify")


def test_math_verify_accepts_more_than_the_builtin_checker():
    builtin = sum(rewards.answers_match(p, g) for p, g in LATEX_EQUAL)
    assert builtin < len(LATEX_EQUAL) - 8
    assert not any(rewards.answers_match(p, g) for p, g in LATEX_DIFFERENT)


def test_math_verify_never_evaluates_model_output(tmp_path):
    marker = tmp_path / "pwned"
    for attack in [f"__import__('os').system('touch {marker}')",
                   f"$__import__('os').system('touch {marker}')$", "x" * 5000, "\\frac{" * 200]:
        assert not rewards.answers_match(attack, "1", "math_verify")
    assert not marker.exists()
    with pytest.raises(ValueError, match="checker must be one of"):
        rewards.answers_match("1", "1", "sympy")
