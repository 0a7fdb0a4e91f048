"""STaR: config validation, which rationales are kept, the hint never stored, resume, and the
tiny run learning for real."""
import json
import os

import jax
import pytest
from conftest import load_config

from r1jax import prompts, tasks
from r1jax.recipes import star


def _config(variant="tiny"):
    return load_config("star", variant)


def _problem(question="3+4+5", answer="12"):
    return tasks.Problem(question, answer, "arithmetic",
                         {"numbers": [3, 4, 5], "ops": ["+", "+"]})


def _completion(answer, reasoning="first 3+4=7\nthen 7+5=12\nso 12"):
    return prompts.r1_completion(reasoning, answer)


def test_config_variants_share_the_r1_zero_base_and_fail_with_the_field_name():
    c = _config()
    star.check_config(c)
    r1 = load_config("r1_zero", "tiny")
    assert c.pretrain.to_dict() == r1.pretrain.to_dict()   # the same base, reusable
    assert c.model.to_dict() == r1.model.to_dict() and c.task.to_dict() == r1.task.to_dict()
    q = _config("qwen2.5-0.5b")
    with pytest.raises(ValueError, match="config.model.path must be a local Hugging Face"):
        star.check_config(q)
    q.model.path = "/data/qwen"
    with pytest.raises(ValueError, match="config.task.train_path"):
        star.check_config(q)
    q.task.train_path, q.task.test_path = "train.jsonl", "test.jsonl"
    star.check_config(q)
    with pytest.raises(ValueError, match="variant"):
        _config("gpt-5")
    with pytest.raises(AttributeError, match="iteratons"):
        c.star.iteratons = 2


@pytest.mark.parametrize("path,value,message", [
    ("star.iterations", 0, "config.star.iterations must be an int > 0, got 0"),
    ("star.samples_per_problem", -2, "config.star.samples_per_problem must be an int > 0"),
    ("star.few_shot_k", -1, "config.star.few_shot_k must be an int >= 0, got -1"),
    ("star.temperature", 0.0, "config.star.temperature must be > 0"),
    ("star.step_growth", 0.5, "config.star.step_growth must be >= 1"),
    ("star.learning_rate", -1e-3, "config.star.learning_rate must be > 0"),
    ("star.hint", "{question}", "config.star.hint must be a string with the fields"),
    ("eval.num_problems", 0, "config.eval.num_problems must be an int > 0"),
    ("eval.temperature", -1.0, "config.eval.temperature must be >= 0"),
    ("task.template", "chatty", "config.task.template must be one of"),
    ("task.name", "gsm8k", "config.model.path must be")])
def test_bad_values_fail_before_any_work_naming_the_full_field(tmp_path, path, value, message):
    c = _config()
    section, name = path.split(".")
    c[section][name] = value
    with pytest.raises(ValueError, match=message):
        star.run(c, str(tmp_path), show_progress=False)
    assert not os.listdir(tmp_path)   # nothing was started


@pytest.mark.parametrize("script,override,message", [
    ("star", "--config.star.iterations=0", "config.star.iterations must be an int > 0"),
    ("star", "--config.star.iteratons=2", "iteratons"),
    ("prompting", "--config.prompting.styles=('few_shot_x',)", "config.prompting.styles[0]")])
def test_entry_points_fail_with_one_line_before_touching_the_workdir(tmp_path, script, override,
                                                                       message):
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "experiments" / f"{script}.py"),
                          f"--config={repo}/configs/{script}.py:tiny",
                          f"--workdir={tmp_path}/w", override], capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path),
                         env=dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu"))
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_steps_grow_per_iteration_as_in_the_paper():
    c = _config()
    assert [star.iteration_steps(c, i) for i in (1, 2, 3)] == [40, 48, 58]


def test_only_correct_rationales_are_kept():
    p = _problem()
    rows = [[_completion("13"), _completion("12"), _completion("12"),
             " 3+4+5 is 12", _completion("12", "first 3+4=7\nthen 7+5=12\nso 12!")]]
    assert star.select_rationales([p], rows, keep=1) == [[_completion("12")]]
    # distinct ones only; no <answer> (an untagged answer) is no answer
    assert star.select_rationales([p], rows, keep=5) == [
        [_completion("12"), _completion("12", "first 3+4=7\nthen 7+5=12\nso 12!")]]
    assert star.select_rationales([p], [[_completion("11"), "answer: 12"]], keep=1) == [[]]


def test_a_rationale_that_repeats_its_hint_is_dropped():
    p = _problem()
    hint = star.hinted("{question}={answer}", p)
    assert hint == "3+4+5=12"
    rows = [[_completion("12", "3+4+5=12"), _completion("12")]]
    assert star.select_rationales([p], rows, keep=1, forbidden=[hint]) == [[_completion("12")]]


_PROBLEMS = tasks.generate("arithmetic", 5, 6, split="train", num_ops=(2, 3), digits=(1, 1),
                           ops="+")


class _FakePolicy:
    """Stands in for sampling: right on the even problems, wrong on the odd ones unless the
    prompt carries the hint (`question=answer`); with `echo` its hinted rationales repeat the
    hint. Records the prompts it is given."""

    def __init__(self, echo: bool, problems=_PROBLEMS):
        self.echo, self.problems, self.prompts = echo, problems, []

    def __call__(self, params, cfg, tok, prompt_texts, key, c, shard):
        self.prompts += prompt_texts
        out = []
        for text in prompt_texts:
            question = text.rsplit("Q: ", 1)[1].split("\n")[0]
            plain, is_hinted, _ = question.partition("=")
            i = next(i for i, p in enumerate(self.problems) if p.question == plain)
            right = bool(is_hinted) or i % 2 == 0
            answer = self.problems[i].answer if right else str(int(self.problems[i].answer) + 1)
            reasoning = f"from {question}" if is_hinted and self.echo else "worked"
            out.append([_completion(answer, reasoning)] * c.star.samples_per_problem)
        return out


@pytest.mark.parametrize("echo", [False, True])
def test_hint_never_stored_and_failures_rationalized(monkeypatch, echo):
    c = _config()
    fake = _FakePolicy(echo)
    monkeypatch.setattr(star, "_sample", fake)
    examples = star.collect(None, None, None, _PROBLEMS, jax.random.key(0), c, True, [], [])
    hints = [star.hinted(c.star.hint, p) for p in _PROBLEMS]
    assert sum(h in t for h in hints for t in fake.prompts) == 3   # the odd problems, hinted
    # a hinted rationale that repeats its hint is dropped; the others are kept
    assert star.solved_counts(examples) == {"solved_direct": 3,
                                            "solved_rationalized": 0 if echo else 3}
    assert {e["problem"] for e in examples if e["source"] == "rationalized"} == \
        (set() if echo else {1, 3, 5})
    for e in examples:   # stored with the plain prompt, hint-free, correct
        assert e["prompt"] == prompts.render(c.task.template, _PROBLEMS[e["problem"]].question)
        assert not any(h in e["prompt"] or h in e["completion"] for h in hints)
        assert tasks.task_accuracy_reward(_PROBLEMS[e["problem"]], e["completion"]) == 1.0
    # without rationalization no hinted prompt is sampled
    fake.prompts.clear()
    examples = star.collect(None, None, None, _PROBLEMS, jax.random.key(0), c, False, [], [])
    assert star.solved_counts(examples) == {"solved_direct": 3, "solved_rationalized": 0}
    assert not any(h in t for h in hints for t in fake.prompts)


def _small_config():
    c = _config()
    c.pretrain.steps, c.pretrain.num_examples = 0, 64   # the base: random weights
    c.star.iterations, c.star.num_train_problems, c.star.steps = 2, 6, 3
    c.star.batch_size, c.star.max_new_tokens, c.star.ablation = 4, 8, False
    c.eval.num_problems, c.eval.num_samples = 4, 1
    c.checkpoint_every = 1
    return c


def test_the_iteration_loop_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    c = _small_config()
    fake = _FakePolicy(False, star.pretrain.load_problems(c, "train", 6, seed=c.seed + 2))
    monkeypatch.setattr(star, "_sample", fake)
    whole = star.run(c, str(tmp_path / "a"), show_progress=False)
    assert [it["train_steps"] for it in whole["iterations"]] == [0, 3, 4]
    assert [it["train_examples"] for it in whole["iterations"]] == [0, 6, 6]

    # The same run, stopped after iteration 2's fine-tuning (its last checkpoint written).
    b = tmp_path / "b"
    b.mkdir()
    import shutil
    shutil.copytree(tmp_path / "a" / "base", b / "base")
    heldout = star._heldout

    def stop_at_iteration_2(params, cfg, tok, problems, key, c_, shard):
        if os.path.exists(b / "star" / "iter_2" / "sft"):
            raise KeyboardInterrupt("stopped")
        return heldout(params, cfg, tok, problems, key, c_, shard)
    monkeypatch.setattr(star, "_heldout", stop_at_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        star.run(c, str(b), show_progress=False)
    assert not (b / "results.json").exists()
    assert (b / "star" / "iter_1" / "record.json").exists()
    assert not (b / "star" / "iter_2" / "record.json").exists()

    # Resumed: iterations 0 and 1 are read back, iteration 2's fine-tuning is not redone.
    monkeypatch.setattr(star, "_heldout", heldout)
    fine_tune = star.fine_tune
    tuned = []

    def counting_fine_tune(*args, **kwargs):
        tuned.append(args[5])
        return fine_tune(*args, **kwargs)
    monkeypatch.setattr(star, "fine_tune", counting_fine_tune)
    make_step = star.train.sft.make_sft_step

    def no_step_runs(*args, **kwargs):
        make_step(*args, **kwargs)

        def step(*a):
            raise AssertionError("a finished fine-tuning trained again")
        return step
    monkeypatch.setattr(star.train.sft, "make_sft_step", no_step_runs)
    fake.prompts.clear()
    resumed = star.run(c, str(b), show_progress=False)
    assert tuned == [2]
    assert len(fake.prompts) == 6 + 3   # iteration 2's problems, then its failures hinted
    for key in ("iterations", "paired_last_minus_first", "sampled_paired_last_minus_first"):
        drop = (lambda v: [{k: x for k, x in it.items() if k != "seconds"} for it in v]
                if key == "iterations" else v)
        assert drop(resumed[key]) == drop(whole[key]), key


def _stored_examples(workdir):
    for path in workdir.glob("*/iter_*/examples.json"):
        yield from json.loads(path.read_text())


@pytest.mark.slow
def test_tiny_star_learns_and_the_ablation_is_reported(tmp_path, tiny_base):
    """STaR on the shared R1-Zero tiny base (the short R1-Zero template), 2 iterations and
    its no-rationalization ablation, 128 train problems, 100 held-out (RESULTS.md: this run
    at seeds 0 and 1, and seeds 0-2 of the full config, all clear these margins)."""
    c = _config()
    c.star.iterations, c.star.num_train_problems, c.eval.num_problems = 2, 128, 100
    tiny_base(tmp_path)
    r = star.run(c, str(tmp_path), show_progress=False)
    print(star.results_table(r))
    its = r["iterations"]
    assert [it["iteration"] for it in its] == [0, 1, 2]
    assert its[0]["heldout_accuracy"] <= 0.4   # the greedy base mostly guesses
    for run in (r, r["no_rationalization"]):
        greedy, sampled = run["paired_last_minus_first"], run["sampled_paired_last_minus_first"]
        assert greedy[0] >= 0.35 and greedy[1] > 0.2, greedy
        assert sampled[0] >= 0.25 and sampled[1] > 0.15, sampled
        first, last = run["iterations"][0], run["iterations"][-1]
        assert last["heldout_accuracy_ci"][0] > first["heldout_accuracy_ci"][1]
        assert run["iterations"][1]["train_examples"] == \
            first["solved_direct"] + first["solved_rationalized"]   # one kept per problem
    assert all(it["solved_rationalized"] == 0 for it in r["no_rationalization"]["iterations"])
    # Every stored example: the plain template prompt, a correct completion, no hint.
    problems = star.pretrain.load_problems(c, "train", 128, seed=c.seed + 2)
    hints = {star.hinted(c.star.hint, p) for p in problems}
    stored = list(_stored_examples(tmp_path))
    assert len(stored) >= 3 * 100
    for e in stored:
        p = problems[e["problem"]]
        assert e["prompt"] == prompts.render(c.task.template, p.question)
        assert tasks.task_accuracy_reward(p, e["completion"]) == 1.0
        assert not any(h in e["prompt"] + e["completion"] for h in hints)
    assert (tmp_path / "results.json").exists() and (tmp_path / "star_heldout.png").exists()


def test_few_shot_prompts_of_the_real_variant_use_the_train_rationales():
    from r1jax import data
    c = _config("qwen2.5-0.5b")
    c.task.train_path = c.task.test_path = data.sample_path("gsm8k")
    shots = star.few_shot_examples(c, 2)
    problems = star.pretrain.load_problems(c, "train", 2, c.seed)
    assert [(q, a) for q, _, a in shots] == [(p.question, p.answer) for p in problems]
    assert all(r and "####" not in r for _, r, _ in shots)
    prompt = star.generation_prompt(c.task.template, "What is 2+2?", shots)
    # each worked example is a whole rendered dialogue, then the question
    assert prompt.count("<answer>") == 2 + 3 * prompts.TEMPLATES["r1_zero"].count("<answer>")
    assert prompt.endswith(prompts.render("r1_zero", "What is 2+2?"))
    hinted = star.hinted(c.star.hint, problems[0])
    assert hinted == f"{problems[0].question} (The answer is {problems[0].answer}.)"
