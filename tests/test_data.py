"""JSONL loaders: shipped samples, answers, malformed lines (raise with line number, or skip)."""
import json

import pytest

from r1jax import data, rewards, tasks


def test_gsm8k_sample():
    result = data.load_jsonl(data.sample_path("gsm8k"), "gsm8k")
    assert result.num_skipped == 0
    answers = [p.answer for p in result.problems]
    assert answers == ["66", "45", "5", "1,325", "-7"]
    p = result.problems[3]
    assert p.task == "gsm8k" and p.question.startswith("A library had 1,200 books")
    assert p.metadata["rationale"].endswith("1,325 books.")
    assert tasks.check(p, "1325") and tasks.check(p, "1,325.0") and not tasks.check(p, "1324")
    assert tasks.task_accuracy_reward(p, "<think>x</think> <answer>1325</answer>") == 1.0


def test_math_sample_nested_boxed():
    result = data.load_jsonl(data.sample_path("math"), "math")
    answers = [p.answer for p in result.problems]
    assert answers == ["\\frac{7}{8}", "6", "x^{2}+2x+1", "540", "5\\sqrt{2}"]
    first = result.problems[0]
    assert first.metadata["level"] == "Level 1" and first.metadata["type"] == "Prealgebra"
    assert tasks.check(first, "0.875") and tasks.check(first, "7/8")
    assert tasks.check(result.problems[2], "x^{2} + 2x + 1")
    assert rewards.accuracy_reward("<answer>\\boxed{5\\sqrt{2}}</answer>", answers[4]) == 1.0


def _write(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


GOOD = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"question": "q"}), "'answer'"),
    (json.dumps({"question": 3, "answer": "#### 1"}), "'question'"),
    (json.dumps({"question": "q", "answer": "no marker"}), "####"),
    (json.dumps({"question": "q", "answer": "x ####  "}), "nothing after"),
])
def test_gsm8k_malformed_line_raises_with_line_number(tmp_path, bad, reason):
    path = _write(tmp_path, [GOOD, "", bad, GOOD])
    with pytest.raises(ValueError, match=rf"d\.jsonl:3: .*{reason}"):
        data.load_jsonl(path, "gsm8k")
    result = data.load_jsonl(path, "gsm8k", on_error="skip")
    assert [p.answer for p in result.problems] == ["2", "2"]
    assert result.num_skipped == 1 and result.skipped[0][0] == 3 and reason in result.skipped[0][1]


def test_math_malformed_lines_skipped_and_counted(tmp_path):
    lines = [
        json.dumps({"problem": "p1", "solution": "so \\boxed{\\frac{1}{2}}"}),
        json.dumps({"problem": "p2", "solution": "no box"}),
        json.dumps({"problem": "p3", "solution": "\\boxed{unclosed {"}),
        json.dumps({"problem": "p4", "solution": "\\boxed{1} then \\boxed{{2}}"}),
    ]
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=r"d\.jsonl:2: .*boxed"):
        data.load_jsonl(path, "math")
    result = data.load_jsonl(path, "math", on_error="skip")
    assert [p.answer for p in result.problems] == ["\\frac{1}{2}", "{2}"]
    assert [line for line, _ in result.skipped] == [2, 3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        data.load_jsonl(data.sample_path("math"), "mmlu")
    with pytest.raises(ValueError, match="on_error"):
        data.load_jsonl(data.sample_path("gsm8k"), "gsm8k", on_error="ignore")
    with pytest.raises(ValueError, match="sample"):
        data.sample_path("aime")


def test_checker_is_recorded_on_each_problem():
    problems = data.load_jsonl(data.sample_path("math"), "math", checker="math_verify").problems
    assert problems and all(p.metadata["checker"] == "math_verify" for p in problems)
    plain = data.load_jsonl(data.sample_path("math"), "math").problems
    assert all("checker" not in p.metadata for p in plain)
    with pytest.raises(ValueError, match="checker must be one of"):
        data.load_jsonl(data.sample_path("math"), "math", checker="sympy")
