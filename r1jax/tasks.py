"""Synthetic reasoning tasks: generators, checkers, worked solutions and the base-pretraining
corpus of the embedded (laptop-scale) default.

Three tasks, all seeded and deterministic (`random.Random`, seeded with strings):
- "arithmetic": multi-step integer arithmetic ("7+13*4-2"); worked solutions evaluate one
  operation per step, multiplications first.
- "countdown": reach a target from given numbers ("Use 3, 7, 4 to make 25."); any expression that
  evaluates to the target, using each given number at most once, is accepted. Checked by a small
  parser of our own, never `eval`.
- "shortest_path": length of the shortest path in a small weighted graph; worked solutions are
  Dijkstra traces (search, not recall).

Worked solutions are steps joined by STEP_DELIMITER, written in English ("en") or French ("fr")
task words, with a per-step error rate; an error propagates to the later steps. The train and
test splits are disjoint: a question belongs to the split given by a hash of its text.
Pure python; no jax, no seqio.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction

from r1jax import prompts, rewards

STEP_DELIMITER = "\n"
LANGUAGES = ("en", "fr")
TASK_NAMES = ("arithmetic", "countdown", "shortest_path")
SPLITS = ("train", "test")
TEST_FRACTION = 0.1  # share of all questions that belong to the test split

# Task words per language. Every word here is in r1jax.rewards.LANGUAGE_WORDS (a test checks).
PHRASES: dict[str, dict[str, str]] = {
    "en": {"first": "first", "then": "then", "so": "so"},
    "fr": {"first": "d'abord", "then": "puis", "so": "donc"},
}

DEFAULT_DIFFICULTY: dict[str, dict] = {
    "arithmetic": {"num_ops": (2, 3), "digits": (1, 2)},
    "countdown": {"count": (3, 4), "max_number": 12, "max_target": 100},
    "shortest_path": {"num_nodes": (4, 4), "extra_edges": (1, 2), "max_weight": 9},
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem. `answer` is the gold answer text; `metadata` holds what the checker and the
    solution writer need (JSON-serialisable: ints, strings and lists)."""
    question: str
    answer: str
    task: str
    metadata: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Solution:
    """A worked solution: `steps` (the last one states the conclusion), the final `answer`, and
    per step whether every step so far is free of errors (process labels for PRMs)."""
    steps: tuple[str, ...]
    answer: str
    step_correct: tuple[bool, ...]

    @property
    def reasoning(self) -> str:
        return STEP_DELIMITER.join(self.steps)


def _rand_range(rng: random.Random, bounds) -> int:
    lo, hi = (bounds, bounds) if isinstance(bounds, int) else bounds
    return rng.randint(lo, hi)


def _slip(rng: random.Random, value: int) -> int:
    """A plausible arithmetic error: value off by a small nonzero amount or by ten."""
    return value + rng.choice((-10, -2, -1, 1, 2, 10))


def _prefix(words: Mapping[str, str], i: int) -> str:
    return words["first"] if i == 0 else words["then"]


def _check_language(language: str) -> dict[str, str]:
    if language not in PHRASES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    return PHRASES[language]


# --------------------------------------------------------------------------------------------
# Arithmetic


def sample_arithmetic(rng: random.Random, num_ops=(2, 3), digits=(1, 2), ops: str = "+-*",
                      order: str = "left") -> Problem:
    """An expression with `num_ops` operators drawn from `ops` (a subset of "+-*") over
    integers of `digits` digits (each an int or an inclusive (lo, hi) range).

    `order` is how worked solutions proceed: "left" evaluates one operation per step from the
    left (`*` first); "any" (sums only, ops="+") adds the numbers in a random order drawn per
    solution, so one problem has many distinct correct reasoning paths."""
    if not ops or set(ops) - set("+-*"):
        raise ValueError(f"arithmetic ops must be a non-empty subset of '+-*', got {ops!r}")
    if order not in ("left", "any"):
        raise ValueError(f"arithmetic order must be 'left' or 'any', got {order!r}")
    if order == "any" and ops != "+":
        raise ValueError(f"arithmetic order='any' needs ops='+' (a sum), got ops={ops!r}")
    n_ops = _rand_range(rng, num_ops)
    numbers = []
    for _ in range(n_ops + 1):
        d = _rand_range(rng, digits)
        numbers.append(rng.randint(1 if d == 1 else 10 ** (d - 1), 10 ** d - 1))
    chosen = [rng.choice(ops) for _ in range(n_ops)]
    question = str(numbers[0]) + "".join(f"{o}{x}" for o, x in zip(chosen, numbers[1:]))
    value = _arithmetic_trace(numbers, chosen, None, 0.0)[-1][-1]
    meta = {"numbers": numbers, "ops": chosen}
    if order != "left":
        meta["order"] = order
    return Problem(question, str(value), "arithmetic", meta)


def _arithmetic_trace(numbers, ops, rng, error_rate):
    """[(a, op, b, result, ok)] evaluating one operation per step, leftmost `*` first."""
    numbers, ops, trace = list(numbers), list(ops), []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, op, b = numbers[i], ops[i], numbers[i + 1]
        r = a * b if op == "*" else a + b if op == "+" else a - b
        ok = True
        if rng is not None and rng.random() < error_rate:
            r, ok = _slip(rng, r), False
        trace.append((a, op, b, ok, r))
        numbers[i:i + 2] = [r]
        del ops[i]
    return trace


def solve_arithmetic(problem: Problem, rng: random.Random, error_rate: float = 0.0,
                     language: str = "en") -> Solution:
    words = _check_language(language)
    numbers = list(problem.metadata["numbers"])
    if problem.metadata.get("order", "left") == "any":
        rng.shuffle(numbers)  # a sum: any order of the terms is a correct path
    trace = _arithmetic_trace(numbers, problem.metadata["ops"], rng, error_rate)
    steps, oks, ok_so_far = [], [], True
    for i, (a, op, b, ok, r) in enumerate(trace):
        ok_so_far = ok_so_far and ok
        steps.append(f"{_prefix(words, i)} {a}{op}{b}={r}")
        oks.append(ok_so_far)
    answer = str(trace[-1][-1])
    steps.append(f"{words['so']} {answer}")
    oks.append(ok_so_far)
    return Solution(tuple(steps), answer, tuple(oks))


# --------------------------------------------------------------------------------------------
# Countdown

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_OP_WEIGHTS = {"+": 0.35, "-": 0.3, "*": 0.25, "/": 0.1}


def _apply(a: int, op: str, b: int) -> int | None:
    """a op b if it is a positive integer (countdown rules), else None."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    return a // b if b > 1 and a % b == 0 else None


def _join(left: tuple[str, int], op: str, right: tuple[str, int]) -> tuple[str, int]:
    """Expression text of left op right with the parentheses precedence needs."""
    (ls, lp), (rs, rp), p = left, right, _PREC[op]
    if lp < p:
        ls = f"({ls})"
    if rp < p or (rp == p and op in "-/"):
        rs = f"({rs})"
    return f"{ls}{op}{rs}", p


def _countdown_replay(numbers, plan, rng, error_rate):
    """Replay a derivation plan [(i, op, j)] over pool indices. With probability `error_rate`
    a step uses a different operator (a wrong choice that propagates). Returns
    [(a, op, b, result, ok)] and the final expression."""
    pool = [(x, (str(x), 3)) for x in numbers]
    trace = []
    for i, op, j in plan:
        (a, ea), (b, eb) = pool[i], pool[j]
        ok = True
        if rng is not None and rng.random() < error_rate:
            op, ok = rng.choice([o for o in "+-*/" if o != op and _apply(a, o, b)]), False
        r = _apply(a, op, b)
        if r is None:  # an earlier error made this operator invalid here
            op = "+"
            r = a + b
        trace.append((a, op, b, r, ok))
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(r, _join(ea, op, eb))]
    return trace, pool[0][1][0]


def sample_countdown(rng: random.Random, count=(3, 4), max_number: int = 12,
                     max_target: int = 100) -> Problem:
    """`count` numbers in 1..max_number and a target in 2..max_target reachable with all of
    them (solvable by construction); the gold answer is the constructing expression."""
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(_rand_range(rng, count))]
        pool, plan = list(numbers), []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            valid = [o for o in "+-*/" if _apply(pool[i], o, pool[j]) is not None]
            op = rng.choices(valid, [_OP_WEIGHTS[o] for o in valid])[0]
            plan.append((i, op, j))
            r = _apply(pool[i], op, pool[j])
            pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [r]
        target = pool[0]
        if 2 <= target <= max_target and target not in numbers:
            break
    _, expression = _countdown_replay(numbers, plan, None, 0.0)
    question = f"Use {', '.join(map(str, numbers))} to make {target}."
    return Problem(question, expression, "countdown",
                   {"numbers": numbers, "target": target, "plan": [list(p) for p in plan]})


def solve_countdown(problem: Problem, rng: random.Random, error_rate: float = 0.0,
                    language: str = "en") -> Solution:
    words = _check_language(language)
    plan = [tuple(p) for p in problem.metadata["plan"]]
    trace, expression = _countdown_replay(problem.metadata["numbers"], plan, rng, error_rate)
    steps, oks, ok_so_far = [], [], True
    for k, (a, op, b, r, ok) in enumerate(trace):
        ok_so_far = ok_so_far and ok
        steps.append(f"{_prefix(words, k)} {a}{op}{b}={r}")
        oks.append(ok_so_far)
    steps.append(f"{words['so']} {expression}")
    oks.append(ok_so_far)
    return Solution(tuple(steps), expression, tuple(oks))


class _Parser:
    """Recursive descent over + - * / ( ) and non-negative integers; exact rationals."""

    MAX_DEPTH = 32

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.leaves = tokens, 0, []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.factor(depth)
            if op == "/" and rhs == 0:
                raise ValueError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.peek()
        self.pos += 1
        if tok == "(":
            if depth >= self.MAX_DEPTH:
                raise ValueError("nested too deeply")
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise ValueError("missing )")
            self.pos += 1
            return value
        if tok is not None and tok.isdigit():
            self.leaves.append(int(tok))
            return Fraction(int(tok))
        raise ValueError(f"unexpected token {tok!r}")


def _tokenize(text: str) -> list[str] | None:
    tokens, i = [], 0
    text = text.replace("\u00d7", "*").replace("\u00f7", "/")
    while i < len(text):
        c = text[i]
        if c in "+-*/()":
            tokens.append(c)
            i += 1
        elif "0" <= c <= "9":
            j = i
            while j < len(text) and "0" <= text[j] <= "9" and j - i < 7:
                j += 1
            tokens.append(text[i:j])
            i = j
        elif c.isspace():
            i += 1
        else:
            return None
    return tokens


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """Exact value and leaf numbers of an arithmetic expression over + - * / ( ) and
    non-negative integers, or None if it is anything else (or longer than 200 characters)."""
    if len(text) > 200:
        return None
    tokens = _tokenize(text)
    if not tokens:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expr(0)
    except ValueError:
        return None
    if parser.pos != len(tokens):
        return None
    return value, parser.leaves


def check_countdown(numbers, target: int, answer_text: str) -> bool:
    """True iff `answer_text` ("expr" or "expr = target") evaluates to `target` using each given
    number at most once."""
    lhs, eq, rhs = answer_text.partition("=")
    if eq:
        if "=" in rhs or rhs.strip() != str(target):
            return False
    parsed = evaluate_expression(lhs)
    if parsed is None:
        return False
    value, leaves = parsed
    return value == target and not Counter(leaves) - Counter(numbers)


# --------------------------------------------------------------------------------------------
# Shortest path


def sample_shortest_path(rng: random.Random, num_nodes=(4, 4), extra_edges=(1, 2),
                         max_weight: int = 9) -> Problem:
    """A connected graph on `num_nodes` >= 3 nodes A, B, …: a random spanning tree plus
    `extra_edges` edges (never A to the last node), weights in 1..max_weight; the answer is the
    shortest distance from A to the last node."""
    n = _rand_range(rng, num_nodes)
    if n < 3:
        raise ValueError(f"num_nodes must be >= 3, got {n}")
    nodes = [chr(ord("A") + k) for k in range(n)]
    edges = {}
    for k in range(1, n):  # no direct edge from A to the target: reaching it takes a search
        edges[(rng.randrange(1 if k == n - 1 else 0, k), k)] = rng.randint(1, max_weight)
    missing = [(i, j) for i in range(n) for j in range(i + 1, n)
               if (i, j) not in edges and (i, j) != (0, n - 1)]
    for pair in rng.sample(missing, min(len(missing), _rand_range(rng, extra_edges))):
        edges[pair] = rng.randint(1, max_weight)
    edge_list = [[nodes[i], nodes[j], w] for (i, j), w in edges.items()]
    rng.shuffle(edge_list)
    target = nodes[-1]
    graph_text = ", ".join(f"{a}-{b} {w}" for a, b, w in edge_list)
    question = f"{graph_text}. Shortest A to {target}?"
    metadata = {"edges": edge_list, "source": "A", "target": target}
    distance = _dijkstra(edge_list, "A", target, None, 0.0)[-1][3]
    return Problem(question, str(distance), "shortest_path", metadata)


def _dijkstra(edges, source, target, rng, error_rate):
    """Settle nodes in order of (believed) distance until `target`: [(node, parent_distance or
    None, weight, distance, ok)]. An error misstates a settled distance; later steps build on it."""
    adjacency: dict[str, list[tuple[str, int]]] = {}
    for a, b, w in edges:
        adjacency.setdefault(a, []).append((b, w))
        adjacency.setdefault(b, []).append((a, w))
    best: dict[str, tuple] = {}  # node -> (distance, parent distance or None, weight)
    settled, trace = {}, []
    node, d = source, 0
    while True:
        settled[node] = d
        for nb, w in adjacency.get(node, []):
            if nb not in settled and (nb not in best or d + w < best[nb][0]):
                best[nb] = (d + w, None if node == source else d, w)
        if target in settled:
            break
        frontier = [(entry[0], nb) for nb, entry in best.items() if nb not in settled]
        if not frontier:
            raise ValueError(f"{target} unreachable from {source}")
        d, node = min(frontier)
        _, parent_d, w = best[node]
        ok = True
        if rng is not None and rng.random() < error_rate:
            wrong = _slip(rng, d)
            d, ok = (wrong if wrong >= 1 else d + 1), False
        trace.append((node, parent_d, w, d, ok))
    return trace


def solve_shortest_path(problem: Problem, rng: random.Random, error_rate: float = 0.0,
                        language: str = "en") -> Solution:
    words = _check_language(language)
    meta = problem.metadata
    trace = _dijkstra(meta["edges"], meta["source"], meta["target"], rng, error_rate)
    steps, oks, ok_so_far = [], [], True
    for k, (node, parent_d, w, d, ok) in enumerate(trace):
        ok_so_far = ok_so_far and ok
        body = f"{node}={d}" if parent_d is None else f"{node}={parent_d}+{w}={d}"
        steps.append(f"{_prefix(words, k)} {body}")
        oks.append(ok_so_far)
    answer = str(trace[-1][3])
    steps.append(f"{words['so']} {answer}")
    oks.append(ok_so_far)
    return Solution(tuple(steps), answer, tuple(oks))


# --------------------------------------------------------------------------------------------
# Task-generic entry points

_SAMPLERS = {"arithmetic": sample_arithmetic, "countdown": sample_countdown,
             "shortest_path": sample_shortest_path}
_SOLVERS = {"arithmetic": solve_arithmetic, "countdown": solve_countdown,
            "shortest_path": solve_shortest_path}


def _check_task(task: str) -> None:
    if task not in _SAMPLERS:
        raise ValueError(f"unknown task {task!r}; known: {TASK_NAMES}")


def split_of(question: str) -> str:
    """"test" for a fixed TEST_FRACTION of questions (by a hash of the text), else "train"."""
    h = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:4], "big")
    return "test" if h < TEST_FRACTION * 2 ** 32 else "train"


def sample_problem(task: str, rng: random.Random, split: str | None = None,
                   **difficulty) -> Problem:
    """One problem of `task` (of `split` if given). `difficulty` overrides DEFAULT_DIFFICULTY."""
    _check_task(task)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kwargs = {**DEFAULT_DIFFICULTY[task], **difficulty}
    for _ in range(10_000):
        problem = _SAMPLERS[task](rng, **kwargs)
        if split is None or split_of(problem.question) == split:
            return problem
    raise ValueError(f"no {split} problem of {task} found for difficulty {kwargs}")


def generate(task: str, seed: int, n: int, split: str = "train", unique: bool = True,
             **difficulty) -> list[Problem]:
    """`n` problems of `task` from `split`, deterministic in (task, seed, split, difficulty).

    With `unique`, no question repeats (ValueError if the difficulty allows too few)."""
    rng = random.Random(f"{task}/{split}/{seed}")
    problems, seen = [], set()
    for _ in range(50 * n + 100):
        if len(problems) == n:
            break
        problem = sample_problem(task, rng, split, **difficulty)
        if unique and problem.question in seen:
            continue
        seen.add(problem.question)
        problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"only {len(problems)} distinct {task} problems for n={n}")
    return problems


def solve(problem: Problem, rng: random.Random, error_rate: float = 0.0,
          language: str = "en") -> Solution:
    """Worked solution of a synthetic problem; each step is wrong with probability
    `error_rate` (the error propagates); task words in `language` ("en" or "fr")."""
    _check_task(problem.task)
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    return _SOLVERS[problem.task](problem, rng, error_rate, language)


def check(problem: Problem, answer_text: str | None) -> bool:
    """True iff `answer_text` (the content of <answer>) solves `problem`. Countdown accepts any
    valid expression; other tasks (GSM8K and MATH included) compare normalised answers, with
    the checker the problem's metadata names (`rewards.CHECKERS`; default "builtin")."""
    if answer_text is None:
        return False
    if problem.task == "countdown":
        meta = problem.metadata
        return check_countdown(meta["numbers"], meta["target"], answer_text)
    return rewards.answers_match(answer_text, problem.answer,
                                 problem.metadata.get("checker", "builtin"))


def task_accuracy_reward(problem: Problem, completion: str) -> float:
    """1.0 iff the completion's last <answer> solves `problem` (the accuracy reward for every
    task, countdown included), else 0.0."""
    return 1.0 if check(problem, rewards.extract_answer(completion)) else 0.0


def few_shot_examples(task: str, k: int, seed: int, language: str = "en",
                      **difficulty) -> list[tuple[str, str, str]]:
    """k (question, reasoning, answer) triples with correct worked solutions, drawn from the
    train split; pass them to `prompts.few_shot_cot`."""
    rng = random.Random(f"few_shot/{task}/{seed}")
    return [(p.question, s.reasoning, s.answer)
            for p in generate(task, seed, k, "train", **difficulty)
            for s in [solve(p, rng, 0.0, language)]]


# --------------------------------------------------------------------------------------------
# Base-pretraining corpus

STYLES = ("careful", "flawed", "guess", "unformatted", "mixed_language")
DEFAULT_TASK_MIX = {"arithmetic": 0.5, "countdown": 0.3, "shortest_path": 0.2}
# Weak but with the good behaviour in distribution: a quarter careful worked solutions, the rest
# flawed reasoning, bare guesses, wrong format and language mixing.
DEFAULT_STYLE_MIX = {"careful": 0.25, "flawed": 0.25, "guess": 0.25, "unformatted": 0.1,
                     "mixed_language": 0.15}


@dataclasses.dataclass(frozen=True)
class CorpusExample:
    prompt: str
    completion: str
    problem: Problem
    style: str
    correct: bool  # the completion's answer solves the problem (read from <answer> or "answer")


def _guess(problem: Problem, rng: random.Random, correct_rate: float) -> str:
    if rng.random() < correct_rate:
        return problem.answer
    if problem.task == "countdown":
        numbers = list(problem.metadata["numbers"])
        rng.shuffle(numbers)
        return "".join(f"{x}{rng.choice('+-*')}" for x in numbers[:-1]) + str(numbers[-1])
    return str(_slip(rng, int(problem.answer)))


def _completion(problem: Problem, style: str, rng: random.Random, flawed_error_rate: float,
                guess_correct_rate: float) -> tuple[str, str]:
    """(completion, answer it gives) in `style`."""
    if style == "careful":
        s = solve(problem, rng)
        return prompts.r1_completion(s.reasoning, s.answer), s.answer
    if style == "flawed":
        s = solve(problem, rng, flawed_error_rate)
        return prompts.r1_completion(s.reasoning, s.answer), s.answer
    if style == "guess":
        guess = _guess(problem, rng, guess_correct_rate)
        return prompts.r1_completion("", guess), guess
    if style == "unformatted":
        s = solve(problem, rng)
        tail = rng.choice((f"answer: {s.answer}", f"The answer is {s.answer}."))
        return f" {s.reasoning}{STEP_DELIMITER}{tail}", s.answer
    if style == "mixed_language":
        state = rng.getstate()
        en = solve(problem, rng, 0.0, "en")
        rng.setstate(state)
        fr = solve(problem, rng, 0.0, "fr")
        if rng.random() < 0.5:
            steps = fr.steps  # all in French
        else:  # switch language mid-way, in either direction
            cut = rng.randint(1, len(en.steps) - 1)
            a, b = (en, fr) if rng.random() < 0.5 else (fr, en)
            steps = a.steps[:cut] + b.steps[cut:]
        return prompts.r1_completion(STEP_DELIMITER.join(steps), en.answer), en.answer
    raise ValueError(f"unknown style {style!r}; known: {STYLES}")


def _normalised_mix(mix: Mapping[str, float], known, what: str) -> tuple[list[str], list[float]]:
    for name, weight in mix.items():
        if name not in known:
            raise ValueError(f"unknown {what} {name!r} in mix; known: {known}")
        if weight < 0:
            raise ValueError(f"{what} weight for {name!r} is negative: {weight}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"{what} mix has no positive weight: {dict(mix)}")
    return list(mix), list(mix.values())


def base_corpus_examples(seed: int, n: int, task_mix: Mapping[str, float] | None = None,
                         style_mix: Mapping[str, float] | None = None, *,
                         split: str = "train", template: str = "r1_zero_short",
                         flawed_error_rate: float = 0.5, guess_correct_rate: float = 0.1,
                         difficulty: Mapping[str, Mapping] | None = None) -> list[CorpusExample]:
    """The base corpus with its bookkeeping (problem, style, correctness); see `base_corpus`."""
    tasks, task_w = _normalised_mix(task_mix or DEFAULT_TASK_MIX, TASK_NAMES, "task")
    styles, style_w = _normalised_mix(style_mix or DEFAULT_STYLE_MIX, STYLES, "style")
    difficulty = difficulty or {}
    rng = random.Random(f"base_corpus/{split}/{seed}")
    out = []
    for _ in range(n):
        task = rng.choices(tasks, task_w)[0]
        style = rng.choices(styles, style_w)[0]
        problem = sample_problem(task, rng, split, **difficulty.get(task, {}))
        completion, given = _completion(problem, style, rng, flawed_error_rate,
                                        guess_correct_rate)
        out.append(CorpusExample(prompts.render(template, problem.question), completion,
                                 problem, style, check(problem, given)))
    return out


def base_corpus(seed: int, n: int, task_mix: Mapping[str, float] | None = None,
                style_mix: Mapping[str, float] | None = None, **kwargs) -> list[tuple[str, str]]:
    """`n` (prompt, completion) pairs for pretraining the tiny base model, deterministic per seed.

    Args:
        seed: corpus seed.
        n: number of pairs.
        task_mix: task name -> weight (default DEFAULT_TASK_MIX).
        style_mix: style -> weight (default DEFAULT_STYLE_MIX), styles:
            "careful"        correct worked steps, " <think>steps</think> <answer>X</answer>";
            "flawed"         the same with `flawed_error_rate` per step (often a wrong answer);
            "guess"          " <think></think> <answer>guess</answer>", the gold answer with
                             probability `guess_correct_rate`, else a near miss;
            "unformatted"    correct steps without tags, then "answer: X" or "The answer is X.";
            "mixed_language" correct, tagged, reasoning in French or switching language mid-way.
        **kwargs: split ("train"), template (a prompts.TEMPLATES key, "r1_zero_short"),
            flawed_error_rate (0.5), guess_correct_rate (0.1), difficulty (task -> kwargs of
            its sampler, overriding DEFAULT_DIFFICULTY).
    """
    return [(e.prompt, e.completion)
            for e in base_corpus_examples(seed, n, task_mix, style_mix, **kwargs)]


# --------------------------------------------------------------------------------------------
# Multi-example documents (opt-in: in-context effects at tiny scale)

STEP_BY_STEP = "Let's think step by step."


def few_shot_documents(seed: int, n: int, max_examples: int,
                       task_mix: Mapping[str, float] | None = None, *, split: str = "train",
                       worked_rate: float = 0.5, trigger_rate: float = 0.2,
                       difficulty: Mapping[str, Mapping] | None = None
                       ) -> list[tuple[str, str]]:
    """`n` documents of 1 to `max_examples` examples in a row, in the format of
    `prompts.few_shot_cot`, as web text has them (pages of worked exercises, answer keys); as
    (prompt, completion) pairs: the prompt is every example but the last one's answer, the
    completion that answer.

    A document keeps one manner throughout, so its earlier examples show how the next one is
    answered: with probability `worked_rate` every example works correct steps ("Q: q\\nA:
    steps\\nThe answer is a.\\n\\n"; in a share `trigger_rate` of those documents each answer
    opens with STEP_BY_STEP), else every example states its correct answer alone ("Q: q\\nA:
    The answer is a.\\n\\n")."""
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    tasks, task_w = _normalised_mix(task_mix or DEFAULT_TASK_MIX, TASK_NAMES, "task")
    difficulty = difficulty or {}
    rng = random.Random(f"few_shot_documents/{split}/{seed}")
    out = []
    for _ in range(n):
        task = rng.choices(tasks, task_w)[0]
        worked = rng.random() < worked_rate
        lead = f" {STEP_BY_STEP}" if worked and rng.random() < trigger_rate else ""
        answers = []
        for _ in range(rng.randint(1, max_examples)):
            problem = sample_problem(task, rng, split, **difficulty.get(task, {}))
            s = solve(problem, rng)
            body = f"{lead} {s.reasoning}\nThe answer is {s.answer}." if worked else \
                f" The answer is {s.answer}."
            answers.append((problem.question, body))
        shots = "".join(f"Q: {q}\nA:{body}\n\n" for q, body in answers[:-1])
        out.append((f"{shots}Q: {answers[-1][0]}\nA:", answers[-1][1]))
    return out
