"""seqio registration: tasks load through the registry, iterate, and their metrics compute."""
import importlib
import json

import pytest
import seqio

from r1jax import prompts, rewards, seqio_tasks, tasks

LENGTHS = {"inputs": 256, "targets": 256}


def _examples(task, split, n, lengths=LENGTHS):
    ds = task.get_dataset(lengths, split=split, shuffle=False)
    return list(ds.take(n).as_numpy_iterator())


def _targets(task, examples):
    return [task.postprocess_fn(seqio_tasks.VOCABULARY.decode(ex["targets"].tolist()),
                                example=ex, is_target=True) for ex in examples]


@pytest.mark.parametrize("task_name", tasks.TASK_NAMES)
def test_synthetic_tasks_iterate_and_metrics_compute(task_name):
    task = seqio.get_mixture_or_task(f"r1jax_{task_name}")
    examples = _examples(task, "test", 8)
    expected = tasks.generate(task_name, 0, 8, "test")
    for ex, problem in zip(examples, expected):
        assert ex["question"].decode() == problem.question
        prompt = seqio_tasks.VOCABULARY.decode(ex["inputs"].tolist())
        assert prompt == prompts.render("r1_zero_short", problem.question)
        assert ex["targets"][-1] == 1  # EOS
        assert rewards.format_reward(ex["targets_pretokenized"].decode()) == 1.0
    targets = _targets(task, examples)
    assert [seqio_tasks.problem_from_target(t) for t in targets] == expected
    good = [ex["targets_pretokenized"].decode() for ex in examples]
    wrong = ["<think></think> <answer>nope</answer>"] * 4 + ["answer: 3"] * 4
    metrics = {}
    for fn in task.metric_fns:
        metrics.update(fn(targets, good))
    assert metrics == {"accuracy": 1.0, "format_rate": 1.0, "pass@1": 1.0, "maj@1": 1.0}
    assert seqio_tasks.accuracy(targets, wrong) == {"accuracy": 0.0}
    assert seqio_tasks.format_rate(targets, wrong) == {"format_rate": 0.5}
    train = {ex["question"] for ex in _examples(task, "train", 200)}
    assert not train & {ex["question"] for ex in examples}


def test_pass_and_maj_at_k_on_sample_lists():
    problems = tasks.generate("arithmetic", 0, 2, "test")
    targets = [{"question": p.question, "answer": p.answer, "task": p.task,
                "metadata": json.dumps(p.metadata)} for p in problems]
    right = [f"<think></think> <answer>{p.answer}</answer>" for p in problems]
    miss = [f"<think></think> <answer>{int(p.answer) + 1}</answer>" for p in problems]
    predictions = [[miss[0], right[0], miss[0], "no answer"],  # 1 of 4 right, majority wrong
                   [right[1], miss[1], right[1], miss[1]]]  # 2 of 4 right, tie -> first seen
    # pass@2 = 1 - C(3,2)/C(4,2) = 0.5 and 1 - C(2,2)/C(4,2) = 5/6
    assert seqio_tasks.pass_at_k(2)(targets, predictions)["pass@2"] == pytest.approx(
        (0.5 + 5 / 6) / 2)
    assert seqio_tasks.pass_at_k(4)(targets, predictions) == {"pass@4": 1.0}
    assert seqio_tasks.maj_at_k(4)(targets, predictions) == {"maj@4": 0.5}
    assert seqio_tasks.maj_at_k(1)(targets, predictions) == {"maj@1": 0.5}
    assert seqio_tasks.majority_answer(["<answer>1,000</answer>", "<answer>7</answer>",
                                        "<answer>1000.0</answer>"]) == "1,000"
    assert seqio_tasks.majority_answer(["x", "y"]) is None
    with pytest.raises(ValueError, match="samples"):
        seqio_tasks.pass_at_k(8)(targets, predictions)


def test_idempotent_registration():
    importlib.reload(seqio_tasks)  # importing again re-registers the defaults: no error
    assert seqio_tasks.register_defaults()[-1] == "r1jax_synthetic"
    assert seqio_tasks.register_synthetic_task("arithmetic") == "r1jax_arithmetic"


def test_mixture_and_few_shot_variant():
    mixture = seqio.get_mixture_or_task("r1jax_synthetic")
    ds = mixture.get_dataset(LENGTHS, split="train", shuffle=False, seed=0)
    prompts_seen = [seqio_tasks.VOCABULARY.decode(ex["inputs"].tolist())
                    for ex in ds.take(30).as_numpy_iterator()]
    assert all(p.startswith("Q: ") and p.endswith("\nthink, then answer\nA:") for p in prompts_seen)
    name = seqio_tasks.register_synthetic_task("countdown", "test_countdown_3shot", num_shots=3,
                                               num_train=5, num_test=5)
    ex = _examples(seqio.get_mixture_or_task(name), "test", 1, {"inputs": 2048, "targets": 256})[0]
    prompt = seqio_tasks.VOCABULARY.decode(ex["inputs"].tolist())
    assert prompt.count("Q: ") == 4 and prompt.endswith(f"Q: {ex['question'].decode()}\nA:")
