"""seqio registration of r1jax's synthetic tasks.

The only module of r1jax that imports seqio or TensorFlow (the model, sampler and RL modules
must run without them). Importing it registers the default synthetic tasks
("r1jax_arithmetic", "r1jax_countdown", "r1jax_shortest_path", R1-Zero short template) and the
mixture "r1jax_synthetic"; registration is idempotent (the first registration of a name wins).

Every example carries the text features "question", "answer", "task", "metadata" (JSON) and
"reference" (a correct R1-Zero completion when one is known, else the gold answer); the
preprocessors render the prompt template into "inputs", copy "reference" into "targets" and
tokenize both with seqio.ByteVocabulary (inputs_pretokenized / targets_pretokenized are kept).

Metric functions take `targets` as produced by `postprocess` with is_target=True (the problem,
as a dict) and `predictions` as completion strings, or lists of sampled completions for pass@k
and maj@k. Values are fractions in [0, 1].
"""
from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from r1jax import prompts, rewards, stats, tasks

VOCABULARY = seqio.ByteVocabulary()
OUTPUT_FEATURES = {
    "inputs": seqio.Feature(VOCABULARY, add_eos=False),
    "targets": seqio.Feature(VOCABULARY, add_eos=True),
}
_TEXT_FIELDS = ("question", "answer", "task", "metadata", "reference")
_SENTINEL = "\x00QUESTION\x00"


# --------------------------------------------------------------------------------------------
# Metrics


def problem_from_target(target: Mapping) -> tasks.Problem:
    """The Problem that `postprocess(…, is_target=True)` packed into a target dict."""
    return tasks.Problem(target["question"], target["answer"], target["task"],
                         json.loads(target["metadata"]))


def _samples(prediction) -> list[str]:
    return [prediction] if isinstance(prediction, str) else list(prediction)


def accuracy(targets: Sequence[Mapping], predictions: Sequence) -> dict[str, float]:
    """Share of predictions whose last <answer> solves the problem (first sample if a list)."""
    scores = [tasks.task_accuracy_reward(problem_from_target(t), _samples(p)[0])
              for t, p in zip(targets, predictions, strict=True)]
    return {"accuracy": sum(scores) / max(len(scores), 1)}


def format_rate(targets: Sequence[Mapping], predictions: Sequence) -> dict[str, float]:
    """Share of predictions with the strict <think>…</think> <answer>…</answer> format."""
    del targets
    scores = [rewards.format_reward(_samples(p)[0]) for p in predictions]
    return {"format_rate": sum(scores) / max(len(scores), 1)}


def pass_at_k(k: int) -> Callable[..., dict[str, float]]:
    """Metric fn: mean unbiased pass@k over each example's n >= k sampled completions."""
    def metric(targets, predictions):
        values = []
        for target, prediction in zip(targets, predictions, strict=True):
            samples, problem = _samples(prediction), problem_from_target(target)
            if len(samples) < k:
                raise ValueError(f"pass@{k} needs at least {k} samples per example, "
                                 f"got {len(samples)}")
            correct = sum(tasks.task_accuracy_reward(problem, s) for s in samples)
            values.append(stats.pass_at_k(len(samples), int(correct), k))
        return {f"pass@{k}": sum(values) / max(len(values), 1)}
    metric.__name__ = f"pass_at_{k}"
    return metric


def majority_answer(completions: Sequence[str]) -> str | None:
    """Most frequent extracted answer (equivalent answers pooled by rewards.canonical_answer);
    completions without an answer are ignored; ties go to the first seen."""
    answers = [a for a in map(rewards.extract_answer, completions) if a is not None]
    if not answers:
        return None
    counts = Counter(rewards.canonical_answer(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[rewards.canonical_answer(a)] == best)


def maj_at_k(k: int) -> Callable[..., dict[str, float]]:
    """Metric fn: share of examples whose majority answer over the first k samples is right."""
    def metric(targets, predictions):
        values = []
        for target, prediction in zip(targets, predictions, strict=True):
            samples = _samples(prediction)
            if len(samples) < k:
                raise ValueError(f"maj@{k} needs at least {k} samples per example, "
                                 f"got {len(samples)}")
            answer = majority_answer(samples[:k])
            values.append(float(tasks.check(problem_from_target(target), answer)))
        return {f"maj@{k}": sum(values) / max(len(values), 1)}
    metric.__name__ = f"maj_at_{k}"
    return metric


def metric_fns(ks: Sequence[int] = (1,)) -> list[Callable]:
    return [accuracy, format_rate] + [pass_at_k(k) for k in ks] + [maj_at_k(k) for k in ks]


def postprocess(output, example=None, is_target: bool = False):
    """Predictions stay completion strings; targets become the problem, as a dict of str."""
    if not is_target:
        return output
    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return {field: text(example[field]) for field in ("question", "answer", "task", "metadata")}


# --------------------------------------------------------------------------------------------
# Sources and preprocessors


def _record(problem: tasks.Problem, reference: str) -> dict[str, str]:
    return {"question": problem.question, "answer": problem.answer, "task": problem.task,
            "metadata": json.dumps(problem.metadata), "reference": reference}


def _dataset(records: Callable[[str], list[dict[str, str]]], split: str, shuffle_files: bool,
             seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # records are generated deterministically per split
    rows = records(split)
    return tf.data.Dataset.from_tensor_slices(
        {field: tf.constant([r[field] for r in rows], dtype=tf.string) for field in _TEXT_FIELDS})


def render_prompt(dataset: tf.data.Dataset, prompt_fn: Callable[[str], str]) -> tf.data.Dataset:
    """inputs = prompt_fn(question), targets = reference (prompt_fn is split around the question
    once, so the map runs in TensorFlow)."""
    prefix, sep, suffix = prompt_fn(_SENTINEL).partition(_SENTINEL)
    if not sep:
        raise ValueError("prompt_fn must include the question")
    def fn(ex):
        return {**ex, "inputs": tf.strings.join([prefix, ex["question"], suffix]),
                "targets": ex["reference"]}
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _prompt_fn(template: str, few_shot: Sequence[tuple[str, str, str]] = ()) -> Callable:
    if few_shot:
        return lambda question: prompts.few_shot_cot(question, few_shot)
    prompts.render(template, "")  # validates the name
    return functools.partial(prompts.render, template)


def _add(name: str, records: Callable, splits: Sequence[str], prompt_fn: Callable,
         ks: Sequence[int]) -> str:
    if name in seqio.TaskRegistry.names():
        return name
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(functools.partial(_dataset, records), splits=splits),
        output_features=OUTPUT_FEATURES,
        preprocessors=[functools.partial(render_prompt, prompt_fn=prompt_fn),
                       seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos_after_trim],
        postprocess_fn=postprocess,
        metric_fns=metric_fns(ks),
    )
    return name


def _synthetic_records(task: str, num: Mapping[str, int], seed: int, difficulty: Mapping,
                       split: str) -> list[dict[str, str]]:
    rng = random.Random(f"seqio/{task}/{split}/{seed}")
    out = []
    for problem in tasks.generate(task, seed, num[split], split, **difficulty):
        solution = tasks.solve(problem, rng)
        out.append(_record(problem, prompts.r1_completion(solution.reasoning, solution.answer)))
    return out


def register_synthetic_task(task: str, name: str | None = None, *,
                            template: str = "r1_zero_short", num_shots: int = 0,
                            num_train: int = 2000, num_test: int = 200, seed: int = 0,
                            difficulty: Mapping | None = None, ks: Sequence[int] = (1,)) -> str:
    """Register one synthetic task (train/test splits from its generator); returns its name
    (default "r1jax_<task>"). With num_shots > 0 the prompt is few-shot chain of thought with
    examples from the train split instead of `template`. Targets: correct worked solutions."""
    if task not in tasks.TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; known: {tasks.TASK_NAMES}")
    few_shot = tasks.few_shot_examples(task, num_shots, seed + 1) if num_shots else ()
    records = functools.partial(_synthetic_records, task, {"train": num_train, "test": num_test},
                                seed, dict(difficulty or {}))
    return _add(name or f"r1jax_{task}", records, tasks.SPLITS,
                _prompt_fn(template, few_shot), ks)


def register_defaults() -> list[str]:
    """The three synthetic tasks and their mixture "r1jax_synthetic" (DEFAULT_TASK_MIX)."""
    names = [register_synthetic_task(task) for task in tasks.TASK_NAMES]
    if "r1jax_synthetic" not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(
            "r1jax_synthetic",
            [(f"r1jax_{t}", w) for t, w in tasks.DEFAULT_TASK_MIX.items()])
    return names + ["r1jax_synthetic"]


register_defaults()
