"""Real reasoning data from local JSONL files: GSM8K-style and MATH-style.

- GSM8K: {"question": …, "answer": "…rationale…\\n#### 42"}; the gold answer follows the last
  "####".
- MATH: {"problem": …, "solution": "… \\boxed{…} …"}; the gold answer is the content of the last
  \\boxed{…} (nested braces balanced).

Both give `r1jax.tasks.Problem`s (task "gsm8k" / "math"), checked by `tasks.check`. A malformed
line raises ValueError naming the file and line (`on_error="raise"`), or is skipped and recorded
(`on_error="skip"`). Blank lines are ignored. The package ships a few sample lines of its own
writing (`sample_path`).
"""
from __future__ import annotations

import dataclasses
import json
import os

from r1jax import rewards
from r1jax.tasks import Problem

_DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
SAMPLES = {"gsm8k": "gsm8k_sample.jsonl", "math": "math_sample.jsonl"}


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """Problems read, and the (line number, reason) of every skipped malformed line."""
    problems: list[Problem]
    skipped: list[tuple[int, str]]

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def sample_path(name: str) -> str:
    """Path of a shipped sample file: "gsm8k" or "math"."""
    if name not in SAMPLES:
        raise ValueError(f"no sample named {name!r}; have {sorted(SAMPLES)}")
    return os.path.join(_DATA_DIR, SAMPLES[name])


def _string_field(record: dict, field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} missing or not a string")
    return value


def _gsm8k_problem(record: dict) -> Problem:
    question = _string_field(record, "question")
    answer_text = _string_field(record, "answer")
    rationale, sep, answer = answer_text.rpartition("####")
    if not sep:
        raise ValueError("field 'answer' has no '#### <answer>' line")
    answer = answer.strip()
    if not answer:
        raise ValueError("field 'answer' has nothing after '####'")
    return Problem(question, answer, "gsm8k", {"rationale": rationale.strip()})


def _math_problem(record: dict) -> Problem:
    problem = _string_field(record, "problem")
    solution = _string_field(record, "solution")
    answer = rewards.last_boxed(solution)
    if answer is None:
        raise ValueError("field 'solution' has no complete \\boxed{...}")
    metadata = {"solution": solution}
    for key in ("level", "type"):
        if isinstance(record.get(key), str):
            metadata[key] = record[key]
    return Problem(problem, answer.strip(), "math", metadata)


_PARSERS = {"gsm8k": _gsm8k_problem, "math": _math_problem}


def load_jsonl(path: str, kind: str, on_error: str = "raise", checker: str = "builtin"
               ) -> LoadResult:
    """Problems from a JSONL file of `kind` "gsm8k" or "math".

    Args:
        path: local JSONL file, one JSON object per line.
        kind: "gsm8k" or "math".
        on_error: "raise" (ValueError "path:line: reason") or "skip" (recorded in `skipped`).
        checker: how answers are compared (`rewards.CHECKERS`): "builtin" or "math_verify"
          (stored in each problem's metadata; `tasks.check` reads it).
    """
    if kind not in _PARSERS:
        raise ValueError(f"kind must be one of {sorted(_PARSERS)}, got {kind!r}")
    if checker not in rewards.CHECKERS:
        raise ValueError(f"checker must be one of {rewards.CHECKERS}, got {checker!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    problems, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"invalid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                problem = _PARSERS[kind](record)
                if checker != "builtin":
                    problem.metadata["checker"] = checker
                problems.append(problem)
            except ValueError as e:
                if on_error == "raise":
                    raise ValueError(f"{path}:{line_no}: {e}") from None
                skipped.append((line_no, str(e)))
    return LoadResult(problems, skipped)
