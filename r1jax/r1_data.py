"""The data of DeepSeek-R1's recipe at laptop scale: the R1 completion format, the cold-start
set, the non-reasoning tasks with their rule scorer, and the preference pairs of the
Bradley-Terry reward model.

* R1 format (`r1_completion`): " <think>{chain of thought}</think> {summary} <answer>{a}</answer>"
  — a readable chain of thought in the target language, one short summary line, the answer.
* Cold start (`cold_start_examples`): a few hundred prompts of the train split with the task's
  careful worked solution (`tasks.solve`, no errors) in that format, English chain of thought;
  at real scale `cold_start_from_jsonl` reads a local JSONL file of worked solutions.
* Non-reasoning tasks (`nonreasoning_problems`), answered at once, no chain of thought:
  "digits" (number words of the corpus's two languages to digits: "forty-two in digits" -> 42,
  "quarante-deux en chiffres" -> 42), "translate" (number words and the solver's step words
  between English and French: "sept in english" -> seven), "direct" (one addition asked
  directly: "what is 3+4" -> 7), each asked in one of two wordings ("... in digits", "write
  ... in digits"). Their own train / test split, by wording: train asks every fact in one
  wording, test asks `NONREASONING_TEST_FRACTION` of them in the other. The reply is
  " <answer>{answer}</answer>"; the rule scorer (`nonreasoning_score`) gives 1 for that, 0.5
  for the right answer with more words around it, 0 for a wrong (or wrong-language) answer.
* Preference pairs (`preference_pairs`): per non-reasoning prompt, the correct, concise,
  same-language reply is chosen over a wrong, a verbose and a mixed-language one.

Pure python; no jax.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from r1jax import prompts, rewards, tasks

SUMMARY = {"en": "the result is {answer}.", "fr": "le résultat est {answer}."}
NONREASONING_TASK = "nonreasoning"
NONREASONING_KINDS = ("digits", "translate", "direct")
NONREASONING_TEST_FRACTION = 0.4   # of the facts: asked in their other wording in test
NONREASONING_TEMPLATE = "at_once_short"


# ----------------------------------------------------------------------------- the R1 format

def summary_line(answer: str, language: str = "en") -> str:
    """The short summary after the chain of thought, in `language`."""
    if language not in SUMMARY:
        raise ValueError(f"language must be one of {sorted(SUMMARY)}, got {language!r}")
    return SUMMARY[language].replace("{answer}", answer)


def r1_completion(reasoning: str, summary: str, answer: str) -> str:
    """" <think>{reasoning}</think> {summary} <answer>{answer}</answer>"."""
    return f" <think>{reasoning}</think> {summary} <answer>{answer}</answer>"


def cold_start_examples(task: str, n: int, seed: int, template: str = "r1_zero_short",
                        language: str = "en", **difficulty) -> list[dict]:
    """n cold-start examples {"prompt", "completion", "answer"}: distinct train-split problems
    of a synthetic `task`, each with its careful worked solution (no errors) in the R1 format,
    the chain of thought and summary in `language`."""
    rng = random.Random(f"cold_start/{task}/{seed}")
    out = []
    for p in tasks.generate(task, seed, n, "train", **difficulty):
        s = tasks.solve(p, rng, 0.0, language)
        out.append({"prompt": prompts.render(template, p.question),
                    "completion": r1_completion(s.reasoning, summary_line(s.answer, language),
                                                s.answer),
                    "answer": s.answer})
    return out


def cold_start_from_jsonl(path: str, template: str, n: int = 0,
                          language: str = "en") -> list[dict]:
    """Cold-start examples from a local JSONL file, one worked solution a line:
    {"question", "reasoning", "answer"} and optionally "summary" (default `summary_line`).
    The first n lines (all with n = 0); a line missing a field fails with its number."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            for field in ("question", "reasoning", "answer"):
                if not isinstance(record.get(field), str) or not record[field].strip():
                    raise ValueError(f"{path}:{i}: field {field!r} must be a non-empty string")
            answer = record["answer"].strip()
            summary = record.get("summary") or summary_line(answer, language)
            out.append({"prompt": prompts.render(template, record["question"]),
                        "completion": r1_completion(record["reasoning"].strip(), summary,
                                                    answer),
                        "answer": answer})
            if n and len(out) == n:
                break
    return out


# ----------------------------------------------------------------------------- number words

_EN_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
             "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
            80: "eighty", 90: "ninety"}
_FR_UNITS = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize "
             "quatorze quinze seize dix-sept dix-huit dix-neuf").split()
_FR_TENS = {20: "vingt", 30: "trente", 40: "quarante", 50: "cinquante", 60: "soixante"}


def number_word(n: int, language: str) -> str:
    """n in 0..99 in words: "forty-two"; French with its 70-99 forms ("soixante et onze",
    "quatre-vingts", "quatre-vingt-dix-sept")."""
    if not 0 <= n <= 99:
        raise ValueError(f"n must be in 0..99, got {n}")
    if language == "en":
        if n < 20:
            return _EN_UNITS[n]
        tens, unit = divmod(n, 10)
        return _EN_TENS[10 * tens] + (f"-{_EN_UNITS[unit]}" if unit else "")
    if language != "fr":
        raise ValueError(f"language must be 'en' or 'fr', got {language!r}")
    if n < 20:
        return _FR_UNITS[n]
    if n < 70:
        tens, unit = divmod(n, 10)
        word = _FR_TENS[10 * tens]
        return word + (" et un" if unit == 1 else f"-{_FR_UNITS[unit]}" if unit else "")
    if n < 80:
        return "soixante" + (" et onze" if n == 71 else f"-{_FR_UNITS[n - 60]}")
    if n == 80:
        return "quatre-vingts"
    return f"quatre-vingt-{_FR_UNITS[n - 80]}"


# The solver's step words, translated (every one is in rewards.LANGUAGE_WORDS).
STEP_WORDS = tuple((tasks.PHRASES["en"][k], tasks.PHRASES["fr"][k]) for k in tasks.PHRASES["en"])
# Two wordings of each kind of question, per question language.
_ASK = {"digits": {"en": ("{x} in digits", "write {x} in digits"),
                   "fr": ("{x} en chiffres", "écris {x} en chiffres")},
        "translate": {"en": ("{x} in french", "say {x} in french"),
                      "fr": ("{x} en anglais", "dis {x} en anglais")},
        "direct": {"en": ("what is {x}", "compute {x}"),
                   "fr": ("combien font {x}", "calcule {x}")}}


def _facts() -> list[tuple[str, str, str, str]]:
    """Every (kind, question language, subject, answer) of the non-reasoning tasks."""
    out = []
    for lang in ("en", "fr"):
        other = "fr" if lang == "en" else "en"
        for n in range(100):
            out.append(("digits", lang, number_word(n, lang), str(n)))
            out.append(("translate", lang, number_word(n, lang), number_word(n, other)))
        for en, fr in STEP_WORDS:
            word, target = (en, fr) if lang == "en" else (fr, en)
            out.append(("translate", lang, word, target))
        for a in range(1, 10):
            for b in range(1, 10):
                out.append(("direct", lang, f"{a}+{b}", str(a + b)))
    return out


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") / 2 ** 32


def _nonreasoning_space() -> list[tuple[str, str, str, str, str, str, int]]:
    """Every (split, kind, question language, question, answer, subject, wording).

    The split is by wording, not by fact: each fact is asked in train in one of its two
    wordings (chosen by a hash of the fact); for NONREASONING_TEST_FRACTION of the facts the
    other wording is a test question. A held-out question thus asks, in words the policy never
    saw with it, a fact that the train questions state — the tiny corpus teaches no number
    words, so a fact held out altogether tests knowledge no stage can give, not behaviour."""
    out = []
    for kind, lang, x, answer in _facts():
        key = f"{kind}/{lang}/{x}"
        train_wording = int(_hash01("nr-wording/" + key) < 0.5)
        out.append(("train", kind, lang, _ASK[kind][lang][train_wording].format(x=x), answer, x,
                    train_wording))
        if _hash01("nr-test/" + key) < NONREASONING_TEST_FRACTION:
            out.append(("test", kind, lang, _ASK[kind][lang][1 - train_wording].format(x=x),
                        answer, x, 1 - train_wording))
    return out


def nonreasoning_problems(seed: int, n: int, split: str = "train",
                          kinds: Sequence[str] = NONREASONING_KINDS) -> list[tasks.Problem]:
    """n distinct non-reasoning problems of `split` (fewer when the split has fewer), shuffled
    by `seed`: task "nonreasoning", metadata {"kind", "lang", "subject", "wording"} ("lang":
    the language the answer and any words around it should be in: the question's, and for
    translations the other; "subject": what is asked about, "forty-two" or "3+4"; "wording":
    0 or 1, which of the kind's two wordings asks it)."""
    if split not in tasks.SPLITS:
        raise ValueError(f"split must be one of {tasks.SPLITS}, got {split!r}")
    unknown = set(kinds) - set(NONREASONING_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {NONREASONING_KINDS}, got "
                         f"{tuple(kinds)}")
    pool = [row[1:] for row in _nonreasoning_space() if row[0] == split and row[1] in kinds]
    random.Random(f"nonreasoning/{split}/{seed}").shuffle(pool)
    out = []
    for kind, lang, q, a, subject, wording in pool[:n]:
        target = ("fr" if lang == "en" else "en") if kind == "translate" else lang
        out.append(tasks.Problem(q, a, NONREASONING_TASK,
                                 {"kind": kind, "lang": target, "subject": subject,
                                  "wording": wording}))
    return out


def nonreasoning_completion(answer: str) -> str:
    """The reply to a non-reasoning question: " <answer>{answer}</answer>", nothing else."""
    return f" {rewards.ANSWER_OPEN}{answer}{rewards.ANSWER_CLOSE}"


def nonreasoning_examples(problems: Sequence[tasks.Problem],
                          template: str = NONREASONING_TEMPLATE) -> list[dict]:
    """SFT examples {"prompt", "completion"} of non-reasoning problems (their ideal reply)."""
    return [{"prompt": prompts.render(template, p.question),
             "completion": nonreasoning_completion(p.answer)} for p in problems]


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def nonreasoning_score(problem: tasks.Problem, text: str) -> float:
    """The rule score of a reply: 1.0 for exactly `<answer>gold</answer>` (white space aside),
    0.5 for the gold answer in the last `<answer>` block with anything else around it (a chain
    of thought, extra words), 0.0 for a wrong, missing or wrong-language answer. Case and
    inner white space are ignored."""
    got = rewards.extract_answer(text)
    if got is None or _norm(got) != _norm(problem.answer):
        return 0.0
    s = text.strip()
    concise = (s.startswith(rewards.ANSWER_OPEN) and s.endswith(rewards.ANSWER_CLOSE)
               and s.count(rewards.ANSWER_OPEN) == 1)
    return 1.0 if concise else 0.5


# ----------------------------------------------------------------------------- preferences

_FILLER = {"en": "first read the question then think so the answer is",
           "fr": "d'abord lire la question puis penser donc la réponse est"}


def _wrong_answer(problem: tasks.Problem, rng: random.Random) -> str:
    kind = problem.metadata["kind"]
    if kind in ("digits", "direct"):
        return str(int(problem.answer) + rng.choice((-2, -1, 1, 2, 10)))
    lang = problem.metadata["lang"]
    words = [number_word(n, lang) for n in range(100)] + [p[lang == "fr"] for p in STEP_WORDS]
    return rng.choice([w for w in words if w != problem.answer])


def preference_pairs(problems: Sequence[tasks.Problem], seed: int,
                     template: str = NONREASONING_TEMPLATE) -> list[dict]:
    """Three pairs per non-reasoning problem, {"prompt", "chosen", "rejected", "rejected_kind"}:
    the concise correct reply chosen over a wrong one ("wrong"), over the right answer after
    a chain of thought and filler words ("verbose"), and over the right answer after words of
    the other language ("mixed_language")."""
    rng = random.Random(f"preference_pairs/{seed}")
    out = []
    for p in problems:
        prompt = prompts.render(template, p.question)
        chosen = nonreasoning_completion(p.answer)
        lang = p.metadata["lang"]
        other = "fr" if lang == "en" else "en"
        rejected = {
            "wrong": nonreasoning_completion(_wrong_answer(p, rng)),
            "verbose": (f" {rewards.THINK_OPEN}{_FILLER[lang]} {p.answer}{rewards.THINK_CLOSE}"
                        f" {_FILLER[lang]} {p.answer}." + chosen),
            "mixed_language": f" {_FILLER[other]}" + chosen,
        }
        for kind, text in rejected.items():
            out.append({"prompt": prompt, "chosen": chosen, "rejected": text,
                        "rejected_kind": kind})
    return out
