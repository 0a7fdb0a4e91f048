"""Synthetic tasks: determinism, disjoint splits, gold answers pass their checkers, worked
solutions, the countdown parser, the base corpus and pass@k."""
import collections
import itertools
import math
import random
from fractions import Fraction

import pytest

from r1jax import prompts, rewards, tasks


def _brute_force_value(numbers, ops):
    """Reference for arithmetic: python's own precedence on ints, via a hand-rolled fold."""
    terms, signs, current = [], [], numbers[0]
    for op, x in zip(ops, numbers[1:]):
        if op == "*":
            current *= x
        else:
            terms.append(current)
            signs.append(op)
            current = x
    terms.append(current)
    total = terms[0]
    for s, t in zip(signs, terms[1:]):
        total = total + t if s == "+" else total - t
    return total


@pytest.mark.parametrize("task", tasks.TASK_NAMES)
def test_deterministic_per_seed(task):
    a = tasks.generate(task, seed=3, n=50)
    assert a == tasks.generate(task, seed=3, n=50)
    assert a != tasks.generate(task, seed=4, n=50)
    s1 = [tasks.solve(p, random.Random(7), 0.3, "fr") for p in a]
    s2 = [tasks.solve(p, random.Random(7), 0.3, "fr") for p in a]
    assert s1 == s2
    assert tasks.base_corpus(5, 40) == tasks.base_corpus(5, 40)
    assert tasks.base_corpus(5, 40) != tasks.base_corpus(6, 40)


@pytest.mark.parametrize("task", tasks.TASK_NAMES)
def test_gold_answers_and_correct_solutions_pass_checker(task):
    train = tasks.generate(task, seed=0, n=2000, split="train")
    test = tasks.generate(task, seed=0, n=300, split="test")
    assert len({p.question for p in train}) == 2000
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(tasks.split_of(p.question) == "train" for p in train)
    assert all(tasks.split_of(p.question) == "test" for p in test)
    rng = random.Random(0)
    for p in train + test:
        assert p.task == task
        assert tasks.check(p, p.answer), p
        language = rng.choice(tasks.LANGUAGES)
        s = tasks.solve(p, rng, error_rate=0.0, language=language)
        assert all(s.step_correct) and len(s.step_correct) == len(s.steps)
        assert s.steps[-1].endswith(s.answer)
        completion = prompts.r1_completion(s.reasoning, s.answer)
        assert rewards.format_reward(completion) == 1.0
        assert tasks.task_accuracy_reward(p, completion) == 1.0
        if task != "countdown":  # countdown answers are expressions, checked by the task
            assert s.answer == p.answer
            assert rewards.accuracy_reward(completion, p.answer) == 1.0
        assert rewards.language_consistency_reward(completion, language) == 1.0


def test_test_split_is_about_a_tenth():
    share = sum(tasks.split_of(str(i)) == "test" for i in range(20_000)) / 20_000
    assert abs(share - tasks.TEST_FRACTION) < 0.01


def test_arithmetic_against_reference_and_difficulty():
    for p in tasks.generate("arithmetic", 1, 500, num_ops=(1, 5), digits=(1, 3)):
        numbers, ops = p.metadata["numbers"], p.metadata["ops"]
        assert int(p.answer) == _brute_force_value(numbers, ops)
        assert p.question == str(numbers[0]) + "".join(f"{o}{x}" for o, x in zip(ops, numbers[1:]))
        assert 1 <= len(ops) <= 5 and all(1 <= x <= 999 for x in numbers)
    p = tasks.generate("arithmetic", 0, 1, num_ops=4, digits=2)[0]
    assert len(p.metadata["ops"]) == 4 and all(10 <= x <= 99 for x in p.metadata["numbers"])


def test_arithmetic_worked_solution_respects_precedence():
    p = tasks.Problem("2+3*4-5", "9", "arithmetic", {"numbers": [2, 3, 4, 5], "ops": ["+", "*", "-"]})
    en = tasks.solve(p, random.Random(0))
    assert en.steps == ("first 3*4=12", "then 2+12=14", "then 14-5=9", "so 9")
    fr = tasks.solve(p, random.Random(0), language="fr")
    assert fr.steps == ("d'abord 3*4=12", "puis 2+12=14", "puis 14-5=9", "donc 9")
    assert tasks.STEP_DELIMITER.join(en.steps) == en.reasoning
    with pytest.raises(ValueError, match="language"):
        tasks.solve(p, random.Random(0), language="de")


def test_sums_in_any_order_have_many_correct_paths():
    kw = dict(num_ops=3, digits=(1, 2), ops="+")
    left = tasks.generate("arithmetic", 3, 50, split="test", **kw)
    anyo = tasks.generate("arithmetic", 3, 50, split="test", order="any", **kw)
    assert [p.question for p in left] == [p.question for p in anyo]  # same problems
    rng = random.Random(0)
    for p in anyo:
        paths = set()
        for _ in range(30):
            s = tasks.solve(p, rng)
            assert s.answer == p.answer and all(s.step_correct)
            # each step adds a term of the question (or a partial sum) to the running sum
            terms = [int(x) for step in s.steps[:-1] for x in step.split()[1].split("=")[0]
                     .split("+")]
            assert sorted(terms[:2] + terms[3::2]) == sorted(p.metadata["numbers"])
            paths.add(s.steps)
        assert len(paths) > 1 + (len(set(p.metadata["numbers"])) > 2)
    # left to right is one path per problem
    assert len({tasks.solve(left[0], rng).steps for _ in range(10)}) == 1
    with pytest.raises(ValueError, match="order='any' needs ops='\\+'"):
        tasks.generate("arithmetic", 0, 1, ops="+-", order="any")
    with pytest.raises(ValueError, match="order must be"):
        tasks.generate("arithmetic", 0, 1, order="random")


def test_errors_propagate_and_are_labelled():
    p = tasks.Problem("2+3*4-5", "9", "arithmetic", {"numbers": [2, 3, 4, 5], "ops": ["+", "*", "-"]})
    s = tasks.solve(p, random.Random(0), error_rate=1.0)
    assert s.step_correct == (False,) * 4
    first = s.steps[0]  # "first 3*4=<wrong>"; the next step must use the wrong value
    wrong = int(first.split("=")[1])
    assert wrong != 12 and s.steps[1].startswith(f"then 2+{wrong}=")
    # with a moderate error rate, errors make answers wrong and labels flip at the first error
    wrong_answers = 0
    for p in tasks.generate("arithmetic", 2, 300):
        s = tasks.solve(p, random.Random(p.question), error_rate=0.3)
        labels = list(s.step_correct)
        assert labels == sorted(labels, reverse=True)  # True... then False...
        wrong_answers += s.answer != p.answer
        if all(labels):
            assert s.answer == p.answer
    assert 100 < wrong_answers < 300


@pytest.mark.parametrize("task", ["countdown", "shortest_path"])
def test_flawed_solutions_are_often_wrong(task):
    problems = tasks.generate(task, 0, 300)
    rng = random.Random(0)
    results = [tasks.check(p, tasks.solve(p, rng, 0.5).answer) for p in problems]
    assert 0.2 < sum(results) / len(results) < 0.8
    results = [tasks.check(p, tasks.solve(p, rng, 1.0).answer) for p in problems]
    assert sum(results) / len(results) < 0.2


def test_countdown_checker():
    numbers, target = [3, 7, 4, 2], 25
    ok = ["7*3+4", "3*7+4", "(7*3)+4", " 4 + 7 * 3 ", "7*3+4=25", "4+3*7", "2*(7+4)+3",
          "7\u00d73+4"]
    for text in ok:
        assert tasks.check_countdown(numbers, target, text), text
    bad = ["7*3+4=24", "7*3+4=25=25", "7*3+5", "7*3*4", "7*7+4", "3*7+4+0", "21+4", "",
           "7*3+4;", "__import__('os')", "7**3", "(7*3+4", "7*3+4)", "7 3 4", "-7+32",
           "25", "7*3+4 and more", "1/0", "7/0+25", "((((((((((((((((((((((((((((((((((7))))))))"
           "))))))))))))))))))))))))))*3+4", "7*3+4" + "+0" * 300]
    for text in bad:
        assert not tasks.check_countdown(numbers, target, text), text
    assert tasks.check_countdown([6, 4, 3], 8, "6/3*4")  # exact rationals
    assert tasks.check_countdown([6, 4, 3], 2, "(6+4)/(3+2)") is False
    assert tasks.check_countdown([1, 3, 4, 6], 24, "6/(1-3/4)")  # fractional intermediates


def test_evaluate_expression_against_brute_force():
    rng = random.Random(0)
    for _ in range(500):
        xs = [rng.randint(1, 20) for _ in range(rng.randint(1, 5))]
        ops = [rng.choice("+-*/") for _ in xs[1:]]
        text = str(xs[0]) + "".join(f"{o}{x}" for o, x in zip(ops, xs[1:]))
        # Reference: shunting precedence by hand with Fractions.
        terms, sign_ops, cur = [], [], Fraction(xs[0])
        for o, x in zip(ops, xs[1:]):
            if o == "*":
                cur *= x
            elif o == "/":
                cur /= x
            else:
                terms.append(cur)
                sign_ops.append(o)
                cur = Fraction(x)
        terms.append(cur)
        ref = terms[0]
        for o, t in zip(sign_ops, terms[1:]):
            ref = ref + t if o == "+" else ref - t
        assert tasks.evaluate_expression(text) == (ref, xs)


def test_countdown_generator_is_solvable_with_all_numbers():
    for p in tasks.generate("countdown", 0, 300, count=4):
        meta = p.metadata
        value, leaves = tasks.evaluate_expression(p.answer)
        assert value == meta["target"]
        assert sorted(leaves) == sorted(meta["numbers"])  # all numbers used exactly once
        assert 2 <= meta["target"] <= 100 and meta["target"] not in meta["numbers"]
        assert p.question == f"Use {', '.join(map(str, meta['numbers']))} to make {meta['target']}."


def _brute_force_shortest(edges, source, target):
    nodes = sorted({a for a, _, _ in edges} | {b for _, b, _ in edges})
    weight = {}
    for a, b, w in edges:
        weight[a, b] = weight[b, a] = w
    best = math.inf
    inner = [x for x in nodes if x not in (source, target)]
    for r in range(len(inner) + 1):
        for middle in itertools.permutations(inner, r):
            path = (source, *middle, target)
            if all(pair in weight for pair in zip(path, path[1:])):
                best = min(best, sum(weight[pair] for pair in zip(path, path[1:])))
    return best


def test_shortest_path_against_brute_force():
    for p in tasks.generate("shortest_path", 0, 300, num_nodes=(3, 6), extra_edges=(0, 4)):
        meta = p.metadata
        assert int(p.answer) == _brute_force_shortest(meta["edges"], "A", meta["target"])
        assert all({a, b} != {"A", meta["target"]} for a, b, _ in meta["edges"])  # no direct edge
        s = tasks.solve(p, random.Random(0))
        assert len(s.steps) >= 2


def test_few_shot_examples_come_from_train_with_correct_solutions():
    shots = tasks.few_shot_examples("arithmetic", 4, seed=0)
    assert len(shots) == 4 and shots == tasks.few_shot_examples("arithmetic", 4, seed=0)
    for question, reasoning, answer in shots:
        assert tasks.split_of(question) == "train"
        assert reasoning.endswith(answer) and reasoning.startswith("first ")


def test_base_corpus_styles_and_sizes():
    examples = tasks.base_corpus_examples(0, 3000)
    counts = collections.Counter(e.style for e in examples)
    for style, weight in tasks.DEFAULT_STYLE_MIX.items():
        assert abs(counts[style] / 3000 - weight) < 0.04, style
    tasks_seen = collections.Counter(e.problem.task for e in examples)
    for task, weight in tasks.DEFAULT_TASK_MIX.items():
        assert abs(tasks_seen[task] / 3000 - weight) < 0.04, task
    by_style = collections.defaultdict(list)
    for e in examples:
        by_style[e.style].append(e)
        assert e.prompt == prompts.render("r1_zero_short", e.problem.question)
        assert tasks.split_of(e.problem.question) == "train"
        if e.problem.task == "arithmetic":
            assert len(e.prompt) < 100
            if e.style == "careful":
                assert len(e.completion) < 120
        assert e.completion.startswith(" ")
        assert e.correct == (tasks.task_accuracy_reward(e.problem, e.completion) == 1.0
                             if e.style != "unformatted" else True)
    rate = {s: sum(e.correct for e in v) / len(v) for s, v in by_style.items()}
    fmt = {s: sum(rewards.format_reward(e.completion) for e in v) / len(v)
           for s, v in by_style.items()}
    assert rate["careful"] == 1.0 and rate["mixed_language"] == 1.0
    assert rate["flawed"] < 0.6 and rate["guess"] < 0.3
    assert fmt == {"careful": 1.0, "flawed": 1.0, "guess": 1.0, "mixed_language": 1.0,
                   "unformatted": 0.0}
    assert all(e.completion.startswith(" <think></think> <answer>") for e in by_style["guess"])
    lc = [rewards.language_consistency_reward(e.completion, "en") for e in by_style["mixed_language"]]
    assert max(lc) < 1.0 and min(lc) == 0.0  # French throughout, or switching mid-way
    assert any(("answer: " in e.completion) for e in by_style["unformatted"])
    assert any(("The answer is " in e.completion) for e in by_style["unformatted"])


def test_base_corpus_mixes_and_errors():
    pairs = tasks.base_corpus(1, 50, {"countdown": 1.0}, {"careful": 1.0}, template="r1_zero")
    assert all(p.startswith("A user and an assistant") and "Use " in p for p, _ in pairs)
    with pytest.raises(ValueError, match="style"):
        tasks.base_corpus(0, 1, style_mix={"sloppy": 1.0})
    with pytest.raises(ValueError, match="task"):
        tasks.base_corpus(0, 1, task_mix={"chess": 1.0})
    with pytest.raises(ValueError, match="no positive weight"):
        tasks.base_corpus(0, 1, style_mix={"careful": 0.0})
    hard = tasks.base_corpus_examples(0, 20, {"arithmetic": 1.0},
                                      difficulty={"arithmetic": {"num_ops": 5, "digits": 3}})
    assert all(len(e.problem.metadata["ops"]) == 5 for e in hard)


def test_task_words_are_in_the_language_vocabularies():
    for language, words in tasks.PHRASES.items():
        for phrase in words.values():
            for word in rewards._WORD.findall(phrase.lower()):
                if len(word) > 1:
                    assert word in rewards.LANGUAGE_WORDS[language], (language, word)


def test_data_layer_imports_neither_seqio_nor_tensorflow():
    import subprocess
    import sys
    code = ("import sys, r1jax.tasks, r1jax.rewards, r1jax.prompts, r1jax.data; "
            "bad = [m for m in ('seqio', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad; "
            "assert 'jax' not in vars(r1jax.tasks) and 'jax' not in vars(r1jax.rewards)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
