"""Rule-based rewards for R1-Zero style RL: answer extraction, format, accuracy, language
consistency, length shaping and repetition penalty.

Model output is untrusted. Nothing here executes it: answers are compared as normalised strings
or as exact rationals parsed by anchored patterns over at most `_MAX_NUMBER_CHARS` characters, and
every function runs in time linear in the length of its input (no backtracking-prone patterns).
Pure python; no jax, no seqio.
"""
from __future__ import annotations

import fractions
import math
import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_MAX_NUMBER_CHARS = 100  # longer strings are compared as strings, never parsed as numbers
# Anchored, unambiguous patterns (each quantifier is separated by a fixed character), used on
# strings of at most _MAX_NUMBER_CHARS characters only.
_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+", re.ASCII)
_FRACTION = re.compile(r"([+-]?\d+)/([+-]?\d+)", re.ASCII)
_LATEX_FRACTION = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}", re.ASCII)
_WORD = re.compile(r"[^\W\d_]+")


# ----------------------------------------------------------------------------------------------
# Answer extraction and normalisation


def extract_answer(text: str) -> str | None:
    """Content of the last complete `<answer>…</answer>` block, stripped; None if there is none."""
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(ANSWER_OPEN):end].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` (or `\\fbox{…}`) in `text`, nested braces balanced.

    Returns None if there is no such group or its braces never close.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0 or text[start:i].strip() not in ("\\boxed", "\\fbox"):
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


_LATEX_NOISE = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "\\%", "%")


def _clean(answer: str) -> str:
    s = answer.strip()
    if "\\boxed" in s or "\\fbox" in s:
        boxed = last_boxed(s)
        if boxed is not None:
            s = boxed
    for noise in _LATEX_NOISE:
        s = s.replace(noise, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\u2212", "-")
    s = s.replace("\\text{", "{").replace("\\mathrm{", "{")
    s = "".join(s.split())
    while s.endswith("."):
        s = s[:-1]
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    return s


def _parse_clean_number(s: str) -> fractions.Fraction | None:
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(s):
        return fractions.Fraction(s.replace(",", ""))
    m = _FRACTION.fullmatch(s)
    sign = ""
    if m is None:
        m = _LATEX_FRACTION.fullmatch(s)
        if m is None:
            return None
        sign, num, den = m.groups()
    else:
        num, den = m.groups()
    if int(den) == 0:
        return None
    value = fractions.Fraction(int(num), int(den))
    return -value if sign == "-" else value


def canonical_answer(answer: str) -> str:
    """A key such that equivalent answers share it: numbers as reduced fractions ("3/4", "1000"),
    anything else as its normalised string (white space, `$`, `\\left`/`\\right` removed)."""
    s = _clean(answer)
    value = _parse_clean_number(s)
    if value is not None:
        return str(value)
    return s


def answers_equal(a: str, b: str) -> bool:
    """True iff the two answers are equivalent numbers or identical normalised strings."""
    return canonical_answer(a) == canonical_answer(b)


# ----------------------------------------------------------------------------------------------
# Format and accuracy


def format_reward(text: str) -> float:
    """1.0 iff `text` is `<think>…</think>` then a non-empty `<answer>…</answer>`, each tag exactly
    once, with only white space before, between and after the two blocks; else 0.0.

    The think block may be empty (an R1-Zero model may skip reasoning); the answer may not.
    """
    s = text.strip()
    if not (s.startswith(THINK_OPEN) and s.endswith(ANSWER_CLOSE)):
        return 0.0
    if (s.count(THINK_OPEN) != 1 or s.count(THINK_CLOSE) != 1 or s.count(ANSWER_OPEN) != 1
            or s.count(ANSWER_CLOSE) != 1):
        return 0.0
    i = s.find(THINK_CLOSE)
    j = s.find(ANSWER_OPEN)
    if j < i or s[i + len(THINK_CLOSE):j].strip():
        return 0.0
    if not s[j + len(ANSWER_OPEN):len(s) - len(ANSWER_CLOSE)].strip():
        return 0.0
    return 1.0


def format_reward_partial(text: str) -> float:
    """Partial-credit format reward in {0, 0.25, 0.5, 0.75, 1}; 1.0 iff `format_reward` is 1.0.

    0.25 each for: exactly one `<think>` before exactly one `</think>`; exactly one `<answer>`
    before exactly one `</answer>` with non-empty content; the think block closing before the
    answer block opens (needs both previous); the strict format holding.
    """
    ti, tc = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    ai, ac = text.count(ANSWER_OPEN), text.count(ANSWER_CLOSE)
    think_ok = ti == 1 and tc == 1 and text.find(THINK_OPEN) < text.find(THINK_CLOSE)
    a0, a1 = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    answer_ok = ai == 1 and ac == 1 and a0 < a1 and bool(text[a0 + len(ANSWER_OPEN):a1].strip())
    order_ok = think_ok and answer_ok and text.find(THINK_CLOSE) < a0
    return 0.25 * (think_ok + answer_ok + order_ok) + 0.25 * format_reward(text)


def _r1_parts(text: str) -> tuple[str, str, str] | None:
    """(reasoning, summary, answer) of a completion `<think>R</think> S <answer>A</answer>`
    (each tag exactly once, in that order, only white space outside), stripped; else None."""
    s = text.strip()
    if not (s.startswith(THINK_OPEN) and s.endswith(ANSWER_CLOSE)):
        return None
    if any(s.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return None
    i, j = s.find(THINK_CLOSE), s.find(ANSWER_OPEN)
    if j < i:
        return None
    return (s[len(THINK_OPEN):i].strip(), s[i + len(THINK_CLOSE):j].strip(),
            s[j + len(ANSWER_OPEN):len(s) - len(ANSWER_CLOSE)].strip())


def summary_text(text: str) -> str | None:
    """The summary of an R1-format completion: the text between `</think>` and `<answer>`,
    stripped ("" when there is none); None when the completion is not in the R1 format."""
    parts = _r1_parts(text)
    return None if parts is None else parts[1]


def r1_format_reward(text: str, require_summary: bool = False) -> float:
    """1.0 iff `text` is DeepSeek-R1's readable format: `<think>` with a non-empty chain of
    thought `</think>`, then a summary (free text; required with `require_summary`), then a
    non-empty `<answer>…</answer>`; each tag exactly once, only white space outside. Else 0.0.

    Unlike `format_reward` (R1-Zero) the think block may not be empty and text may stand
    between the two blocks."""
    parts = _r1_parts(text)
    if parts is None:
        return 0.0
    reasoning, summary, answer = parts
    if not reasoning or not answer or (require_summary and not summary):
        return 0.0
    return 1.0


def summary_reward(text: str) -> float:
    """1.0 iff `text` is in the R1 format (`r1_format_reward`) with a non-empty summary."""
    return r1_format_reward(text, require_summary=True)


CHECKERS = ("builtin", "math_verify")
_MATH_VERIFY_MAX_CHARS = 1000


def math_verify_equal(predicted: str, gold: str) -> bool:
    """Equivalence by math-verify (the checker TRL and open-r1 use) for MATH-style answers:
    LaTeX parsed by its ANTLR grammar into SymPy (\\dfrac12 = 1/2, x=3 = 3, 10^{3} = 1000,
    3\\frac{1}{2} = 7/2, surds, sets in any order). Only the LaTeX path is used: math-verify's
    plain-expression path calls sympy.parse_expr, which evaluates text as Python, and model
    output is never evaluated as code. Answers longer than 1,000 characters are not parsed.
    Needs the optional package: `pip install 'r1jax[math]'`."""
    if answers_equal(predicted, gold):
        return True
    try:
        import math_verify
    except ImportError as e:
        raise ImportError("checker 'math_verify' needs the math-verify package: pip install "
                          "'r1jax[math]' (or math-verify)") from e
    if max(len(predicted), len(gold)) > _MATH_VERIFY_MAX_CHARS:
        return False
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    import threading
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    config = [math_verify.LatexExtractionConfig()]

    def parse(answer: str):
        answer = answer.replace("\\$", "").strip()
        text = answer if ("$" in answer or "\\boxed" in answer) else f"${answer}$"
        return math_verify.parse(text, extraction_config=config, parsing_timeout=timeout)

    gold_parsed, pred_parsed = parse(gold), parse(predicted)
    return bool(gold_parsed and pred_parsed
                and math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def answers_match(predicted: str, gold: str, checker: str = "builtin") -> bool:
    """`answers_equal` (checker "builtin", the default: numbers, fractions, \\boxed) or
    `math_verify_equal` (checker "math_verify")."""
    if checker == "builtin":
        return answers_equal(predicted, gold)
    if checker == "math_verify":
        return math_verify_equal(predicted, gold)
    raise ValueError(f"checker must be one of {CHECKERS}, got {checker!r}")


def accuracy_reward(text: str, answer: str) -> float:
    """1.0 iff `extract_answer(text)` is equivalent to the gold `answer` (see `answers_equal`)."""
    predicted = extract_answer(text)
    if predicted is None:
        return 0.0
    return 1.0 if answers_equal(predicted, answer) else 0.0


# ----------------------------------------------------------------------------------------------
# Language consistency

# Task words of r1jax.tasks (both languages) plus common function words. Words found in both
# lists (e.g. "distance", "total") are ambiguous and count for neither language.
_EN = set("""
first then so the answer is use to make edges edge shortest from path and next now we get add
multiply subtract divide minus plus times equals equal wait check try again no yes it of that
this with left which gives total step steps result number numbers target distance node via let
think by thus therefore because reach reached settle settled smallest same wrong right correct
not but or if are be can cannot one two three four five six seven eight nine ten what how
""".split())
_FR = set("""
abord puis donc la le les réponse est utiliser utilise pour faire arêtes arête plus court chemin
de du des et ensuite maintenant nous obtenons ajouter multiplier soustraire diviser moins fois
égale égal attendre attends vérifier vérifions essayer encore non oui il que cela avec reste
qui donne total étape étapes résultat nombre nombres cible distance noeud nœud par alors car
atteindre atteint même faux juste correct pas mais ou si sont être peut un deux trois quatre
cinq six sept huit neuf dix quoi comment pensons
""".split())
LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(_EN - _FR),
    "fr": frozenset(_FR - _EN),
}
_OTHER_WORDS = {lang: frozenset().union(*(w for k, w in LANGUAGE_WORDS.items() if k != lang))
                for lang in LANGUAGE_WORDS}


def reasoning_text(text: str) -> str:
    """The chain of thought: the content of the first `<think>` block (to the end of the text if
    it never closes); without a `<think>` tag, the whole text up to the last `<answer>`."""
    start = text.find(THINK_OPEN)
    if start < 0:
        cut = text.rfind(ANSWER_OPEN)
        return text if cut < 0 else text[:cut]
    start += len(THINK_OPEN)
    end = text.find(THINK_CLOSE, start)
    return text[start:] if end < 0 else text[start:end]


def language_consistency_reward(text: str, lang: str) -> float:
    """Share of the reasoning's words in language `lang`, among words of either language.

    Words are maximal runs of letters, lower-cased; numbers, symbols and words of neither (or
    both) vocabularies are ignored. With no classifiable word at all the reward is 1.0: nothing
    was written in the wrong language (the reward measures mixing, not effort; pair it with the
    accuracy reward, as R1 does). Range [0, 1].
    """
    if lang not in LANGUAGE_WORDS:
        raise ValueError(f"lang must be one of {sorted(LANGUAGE_WORDS)}, got {lang!r}")
    target, others = LANGUAGE_WORDS[lang], _OTHER_WORDS[lang]
    hits = misses = 0
    for word in _WORD.findall(reasoning_text(text).lower()):
        if word in target:
            hits += 1
        elif word in others:
            misses += 1
    if hits + misses == 0:
        return 1.0
    return hits / (hits + misses)


# ----------------------------------------------------------------------------------------------
# Length and repetition


def cosine_length_reward(length: int, correct: bool, max_length: int, *,
                         correct_range: tuple[float, float] = (2.0, 1.0),
                         wrong_range: tuple[float, float] = (-10.0, 0.0),
                         exceed_reward: float = -10.0) -> float:
    """Cosine length-scaled reward (Yeo et al. 2025, "Demystifying long chain-of-thought").

    With t = length / max_length, r = r_L + (r_0 - r_L) * (1 + cos(pi t)) / 2, where
    (r_0, r_L) = `correct_range` for a correct answer (short correct answers earn more) and
    `wrong_range` otherwise (long wrong answers are punished less, encouraging more thought).
    Lengths above `max_length` get `exceed_reward`. Lengths are in tokens.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if length > max_length:
        return float(exceed_reward)
    r0, r_end = correct_range if correct else wrong_range
    return r_end + (r0 - r_end) * 0.5 * (1.0 + math.cos(math.pi * length / max_length))


def repetition_penalty(text: str, ngram_size: int = 3, max_penalty: float = 1.0) -> float:
    """-max_penalty * (share of repeated word n-grams), i.e. -max_penalty * (1 - distinct / total).

    Range [-max_penalty, 0]; 0 for texts with fewer than `ngram_size` words.
    """
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
    words = text.split()
    total = len(words) - ngram_size + 1
    if total <= 0:
        return 0.0
    distinct = len(set(zip(*(words[i:] for i in range(ngram_size)))))
    return -max_penalty * (1.0 - distinct / total)
