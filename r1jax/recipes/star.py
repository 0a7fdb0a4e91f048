"""STaR, the Self-Taught Reasoner (Zelikman et al. 2022): the model learns from its own
rationales that reach the correct answer.

`run(config, workdir)` takes a `configs/star.py` config. Iteration 0 is the base policy. For
each later iteration i = 1..K: the rationales of policy i-1 on the same training problems are
sampled (few-shot prompted when `star.few_shot_k` > 0); those whose answer is correct are kept;
for the problems with none, the prompt carries the correct answer as a hint (rationalization)
and the rationales that reach it are kept, stored with the plain prompt (the hint never enters
a training example); policy i is the *base* fine-tuned on the union for `star.steps *
star.step_growth ** (i - 1)` steps. Every policy is evaluated on the same held-out problems,
greedy and sampled. With `star.ablation` the loop also runs without rationalization.

Writes `<workdir>/results.json`: `iterations` (per policy: problems solved directly and by
rationalization, training examples and steps, held-out accuracy greedy and sampled with 95%
intervals), `paired_last_minus_first` (greedy, last policy - base, over problems, as [mean,
low, high]) and `sampled_paired_last_minus_first`, and the same under `no_rationalization`;
`metrics.jsonl` and `star_heldout.png`. Each iteration's data and record are files under
`<workdir>/<run>/iter_<i>/`, so a stopped run resumes where it was.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from r1jax import evaluation, pretrain, prompts, sampler, sharding, stats, tasks, train
from r1jax.config_checks import check_task, get, is_int, needs
from r1jax.reporting import MetricWriter, plot_curves, read_json, read_metrics, write_json

RUNS = {"star": True, "no_rationalization": False}   # run name -> rationalize


# ----------------------------------------------------------------------------- config

def check_config(c) -> None:
    """Every value of config `c` a run uses, each failing with its full field path, before
    any work."""
    need = needs(c)
    for path in ("star.iterations", "star.num_train_problems", "star.samples_per_problem",
                 "star.keep_per_problem", "star.steps", "star.batch_size",
                 "star.max_new_tokens", "eval.num_problems", "eval.num_samples",
                 "pretrain.batch_size", "pretrain.seq_len", "pretrain.num_examples",
                 "checkpoint_every", "keep_checkpoints"):
        need(is_int(get(c, path)) and get(c, path) > 0, path, "an int > 0")
    for path in ("star.few_shot_k", "star.warmup_steps", "pretrain.steps",
                 "pretrain.warmup_steps"):
        need(is_int(get(c, path)) and get(c, path) >= 0, path, "an int >= 0")
    need(c.star.temperature > 0, "star.temperature", "> 0 (rationales are sampled)")
    need(c.eval.temperature >= 0, "eval.temperature", ">= 0 (0: greedy)")
    need(c.star.learning_rate > 0, "star.learning_rate", "> 0")
    need(c.star.step_growth >= 1, "star.step_growth", ">= 1 (steps grow per iteration)")
    need(c.pretrain.learning_rate > 0, "pretrain.learning_rate", "> 0")
    need(isinstance(c.star.hint, str) and "{answer}" in c.star.hint
         and "{question}" in c.star.hint, "star.hint",
         "a string with the fields {question} and {answer}")
    need(c.task.template in prompts.TEMPLATES, "task.template",
         f"one of {sorted(prompts.TEMPLATES)}")
    check_task(c, f" (the tiny base knows only {tasks.TASK_NAMES})")


def iteration_steps(c, i: int) -> int:
    """Fine-tuning steps of policy i >= 1: star.steps, grown by star.step_growth per iteration."""
    return int(round(c.star.steps * c.star.step_growth ** (i - 1)))


# ----------------------------------------------------------------------------- rationales

def hinted(hint: str, problem: tasks.Problem) -> str:
    """The question of a rationalization prompt: `hint` filled with the question and answer."""
    return hint.replace("{question}", problem.question).replace("{answer}", problem.answer)


def generation_prompt(template: str, question: str,
                      shots: Sequence[tuple[str, str, str]] = ()) -> str:
    """The prompt `template` renders for `question`, after worked (question, reasoning,
    answer) examples in the same template, one blank line apart (few-shot prompting)."""
    prefix = "".join(prompts.render(template, q) + prompts.r1_completion(r, a) + "\n\n"
                     for q, r, a in shots)
    return prefix + prompts.render(template, question)


def few_shot_examples(c, k: int) -> list[tuple[str, str, str]]:
    """k (question, reasoning, answer) worked train examples: synthetic solutions, or the
    rationales (GSM8K) / solutions (MATH) of the first train problems of the JSONL file."""
    if k == 0:
        return []
    if c.task.name in tasks.TASK_NAMES:
        return tasks.few_shot_examples(c.task.name, k, c.seed + 999, **pretrain.difficulty(c))
    pool = pretrain.load_problems(c, "train", k, c.seed)
    return [(p.question, p.metadata.get("rationale") or p.metadata.get("solution", ""),
             p.answer) for p in pool]


def select_rationales(problems: Sequence[tasks.Problem], completions: Sequence[Sequence[str]],
                      keep: int, forbidden: Optional[Sequence[str]] = None) -> list[list[str]]:
    """Per problem, up to `keep` distinct completions whose answer solves the problem (and,
    with `forbidden`, that do not contain that problem's forbidden text: its hint)."""
    out = []
    for i, (problem, row) in enumerate(zip(problems, completions)):
        kept = []
        for text in row:
            if len(kept) == keep:
                break
            if forbidden is not None and forbidden[i] in text:
                continue
            if text not in kept and tasks.task_accuracy_reward(problem, text) == 1.0:
                kept.append(text)
        out.append(kept)
    return out


def _sample(params, cfg, tok, prompt_texts, key, c, shard) -> list[list[str]]:
    """star.samples_per_problem completions of each prompt at star.temperature, decoded."""
    sampling = sampler.SamplingConfig(max_new_tokens=c.star.max_new_tokens,
                                      num_samples=c.star.samples_per_problem,
                                      temperature=c.star.temperature)
    texts = []
    for j, start in enumerate(range(0, len(prompt_texts), 128)):
        roll = evaluation.sample_completions(params, cfg, tok, prompt_texts[start:start + 128],
                                             jax.random.fold_in(key, j), sampling, shard=shard)
        texts += roll.texts(tok)
    return texts


def collect(params, cfg, tok, problems, key, c, rationalize: bool, shots, hint_shots,
            shard=None) -> list[dict]:
    """The training examples one policy yields on `problems`: a kept rationale per solved
    problem (source "direct"), and with `rationalize`, for the others, a kept rationale of
    the hinted prompt (source "rationalized"). Each example is stored with the plain,
    zero-shot prompt of the task template: neither the hint nor the few-shot examples."""
    template, keep = c.task.template, c.star.keep_per_problem
    texts = _sample(params, cfg, tok, [generation_prompt(template, p.question, shots)
                                       for p in problems], jax.random.fold_in(key, 0), c, shard)
    direct = select_rationales(problems, texts, keep)
    examples = _examples(problems, range(len(problems)), direct, template, "direct")
    failed = [i for i, kept in enumerate(direct) if not kept]
    if rationalize and failed:
        hints = [hinted(c.star.hint, problems[i]) for i in failed]
        texts = _sample(params, cfg, tok, [generation_prompt(template, h, hint_shots)
                                           for h in hints], jax.random.fold_in(key, 1), c, shard)
        rationalized = select_rationales([problems[i] for i in failed], texts, keep,
                                         forbidden=hints)
        examples += _examples(problems, failed, rationalized, template, "rationalized")
    return examples


def _examples(problems, indices, kept, template: str, source: str) -> list[dict]:
    return [{"problem": int(i), "prompt": prompts.render(template, problems[i].question),
             "completion": text, "source": source}
            for i, texts in zip(indices, kept) for text in texts]


def solved_counts(examples: Sequence[dict]) -> dict:
    """Distinct problems with a kept rationale, by source."""
    return {f"solved_{s}": len({e["problem"] for e in examples if e["source"] == s})
            for s in ("direct", "rationalized")}


# ----------------------------------------------------------------------------- the loop

def fine_tune(base_params, cfg, tok, examples: Sequence[dict], c, i: int, workdir: str,
              writer, mesh=None, show_progress: bool = True, stage: str = "star"):
    """The base fine-tuned on the examples (prompt -> completion) for iteration i's steps;
    resumes from `workdir`'s checkpoint. The base's arrays are left intact (the loop donates
    the copy it trains)."""
    pairs = [(e["prompt"], e["completion"]) for e in examples]
    longest = max(len(tok.encode(p)) + len(tok.encode(q)) + 1 for p, q in pairs)
    tokens, mask = train.encode_pairs(tok, pairs, -(-longest // 8) * 8)
    steps = iteration_steps(c, i)
    loop = train.LoopConfig(steps=steps, learning_rate=c.star.learning_rate,
                            warmup_steps=c.star.warmup_steps, schedule="constant",
                            checkpoint_every=min(c.checkpoint_every, steps),
                            keep_checkpoints=c.keep_checkpoints, seed=c.seed * 1000 + i)
    return train.run_sft(jax.tree.map(jnp.copy, base_params), cfg, tokens, mask, loop, workdir,
                         batch_size=c.star.batch_size, stage=f"{stage}_iter{i}", writer=writer,
                         mesh=mesh, show_progress=show_progress)


def _heldout(params, cfg, tok, problems, key, c, shard) -> dict:
    """Greedy and sampled held-out results of one policy (accuracy, interval, per problem)."""
    common = dict(template=c.task.template, max_new_tokens=c.star.max_new_tokens, shard=shard)
    g = evaluation.evaluate(params, cfg, tok, problems, key, num_samples=1, temperature=0.0,
                            **common)
    s = evaluation.evaluate(params, cfg, tok, problems, jax.random.fold_in(key, 1),
                            num_samples=c.eval.num_samples, temperature=c.eval.temperature,
                            **common)
    return {"heldout_accuracy": g["accuracy"], "heldout_accuracy_ci": g["accuracy_ci"],
            "heldout_sampled_accuracy": s["accuracy"],
            "heldout_sampled_accuracy_ci": s["accuracy_ci"],
            "heldout_format_rate": s["format_rate"], "heldout_mean_length": s["mean_length"],
            "per_problem_greedy": g["per_problem"], "per_problem_sampled": s["per_problem"],
            "greedy_examples": [list(e) for e in g["examples"][:2]]}


class Context:
    """What every iteration of every run shares: model, tokenizer, base params, problems,
    prompts and keys."""

    def __init__(self, c, workdir, cfg, tok, base_params, writer, mesh, show_progress):
        self.c, self.workdir, self.cfg, self.tok = c, workdir, cfg, tok
        self.base_params, self.writer, self.mesh = base_params, writer, mesh
        self.show_progress = show_progress
        self.shard = None if mesh is None else sharding.make_shard_fn(mesh)
        self.train_problems = pretrain.load_problems(c, "train", c.star.num_train_problems,
                                                     seed=c.seed + 2)
        self.eval_problems = pretrain.load_problems(c, "test", c.eval.num_problems,
                                                    seed=c.seed + 1)
        self.shots = few_shot_examples(c, c.star.few_shot_k)
        self.hint_shots = [(hinted(c.star.hint, tasks.Problem(q, a, c.task.name)), r, a)
                           for q, r, a in self.shots]
        self.key = jax.random.key(c.seed + 4242)


def iteration(ctx: Context, run_dir: str, i: int, data: Optional[list], rationalize: bool
              ) -> tuple[dict, list]:
    """Policy i of a run: fine-tuned on `data` (the examples of policy i-1; the base when i is
    0), evaluated held-out, and the examples it yields. (record, examples), read back from
    `run_dir/iter_<i>/` when that iteration already finished."""
    c, d = ctx.c, os.path.join(run_dir, f"iter_{i}")
    if os.path.exists(os.path.join(d, "record.json")):
        return (read_json(os.path.join(d, "record.json")),
                read_json(os.path.join(d, "examples.json")))
    t = time.time()
    steps = iteration_steps(c, i) if i and data else 0
    params = ctx.base_params
    if steps:
        params = fine_tune(ctx.base_params, ctx.cfg, ctx.tok, data, c, i,
                           os.path.join(d, "sft"), ctx.writer, ctx.mesh, ctx.show_progress,
                           stage=os.path.basename(run_dir))
    t_train = time.time() - t
    record = {"iteration": i, "train_examples": len(data or []), "train_steps": steps}
    record.update(_heldout(params, ctx.cfg, ctx.tok, ctx.eval_problems,
                           jax.random.fold_in(ctx.key, 2 * i), c, ctx.shard))
    examples = collect(params, ctx.cfg, ctx.tok, ctx.train_problems,
                       jax.random.fold_in(ctx.key, 2 * i + 1), c, rationalize, ctx.shots,
                       ctx.hint_shots, ctx.shard)
    record.update(solved_counts(examples), num_train_problems=len(ctx.train_problems),
                  seconds={"fine_tune": round(t_train, 1),
                           "evaluate_and_collect": round(time.time() - t - t_train, 1)})
    write_json(os.path.join(d, "examples.json"), examples)
    write_json(os.path.join(d, "record.json"), record)
    return record, examples


def run_loop(ctx: Context, name: str, rationalize: bool, first: tuple[dict, list]) -> dict:
    """Iterations 1..K of one run after the shared iteration 0 (`first`); its results."""
    record0, examples0 = first
    if not rationalize:   # the base's rationalized examples are no part of this run
        examples0 = [e for e in examples0 if e["source"] == "direct"]
        record0 = dict(record0, solved_rationalized=0)
    records, data = [record0], examples0
    for i in range(1, ctx.c.star.iterations + 1):
        record, data = iteration(ctx, os.path.join(ctx.workdir, name), i, data, rationalize)
        records.append(record)
    for record in records:
        ctx.writer.write(record["iteration"], {f"{name}_{k}": v for k, v in record.items()
                                               if isinstance(v, (int, float))}, "star")
    return summarize(records)


def summarize(records: Sequence[dict]) -> dict:
    """A run's results: its iterations (per-problem lists dropped) and the paired differences
    last - first over the held-out problems, greedy and sampled."""
    first, last = records[0], records[-1]
    return {
        "iterations": [{k: v for k, v in r.items() if not k.startswith("per_problem")}
                       for r in records],
        "paired_last_minus_first": list(stats.paired_difference(
            last["per_problem_greedy"], first["per_problem_greedy"])),
        "sampled_paired_last_minus_first": list(stats.paired_difference(
            last["per_problem_sampled"], first["per_problem_sampled"])),
        "per_problem": {"first_greedy": first["per_problem_greedy"],
                        "last_greedy": last["per_problem_greedy"]},
    }


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    check_config(c)
    t_start = time.time()
    mesh = pretrain.make_mesh(c)
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir)
    cfg, tok, base_params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    ctx = Context(c, workdir, cfg, tok, base_params, writer, mesh, show_progress)
    # Iteration 0 (the base) is shared by both runs: its hinted attempts are always made (the
    # run without rationalization drops them), so its files serve either run.
    first = iteration(ctx, os.path.join(workdir, "base_policy"), 0, None, True)
    results = {"rationalize": c.star.rationalize}
    main = run_loop(ctx, "star" if c.star.rationalize else "no_rationalization",
                    c.star.rationalize, first)
    results.update(main)
    if c.star.rationalize and c.star.ablation:
        results["no_rationalization"] = run_loop(ctx, "no_rationalization", False, first)
    writer.close()
    results.update({"num_train_problems": len(ctx.train_problems),
                    "num_eval_problems": len(ctx.eval_problems),
                    "eval_samples_per_problem": c.eval.num_samples,
                    "eval_temperature": c.eval.temperature,
                    "seconds": round(time.time() - t_start, 1)})
    write_json(os.path.join(workdir, "results.json"), results)
    make_plots(workdir)
    return results


def make_plots(workdir: str) -> None:
    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"), "star")
    keys = [f"{name}_{k}" for name in RUNS for k in ("heldout_accuracy",
                                                      "heldout_sampled_accuracy")]
    plot_curves(rows, [k for k in keys if any(k in r for r in rows)],
                os.path.join(workdir, "star_heldout.png"), "STaR: held-out accuracy per iteration")


def results_table(results: dict) -> str:
    """Per iteration: solved directly / by rationalization, held-out greedy and sampled
    accuracy; then the paired differences, for the run and its ablation."""
    def ci(x):
        return f"[{x[0]:.3f}, {x[1]:.3f}]"

    lines = []
    runs = [("STaR" if results.get("rationalize", True) else "STaR, no rationalization",
             results)]
    if "no_rationalization" in results:
        runs.append(("STaR, no rationalization", results["no_rationalization"]))
    for label, r in runs:
        lines.append(f"{label} ({results['num_train_problems']} train problems, "
                     f"{results['num_eval_problems']} held-out)")
        lines.append(f"{'iter':>4} {'examples':>8} {'steps':>5} {'direct':>6} {'rational.':>9}"
                     f"  {'greedy':24s}{'sampled':24s}")
        for it in r["iterations"]:
            lines.append(f"{it['iteration']:>4} {it['train_examples']:>8} "
                         f"{it['train_steps']:>5} {it['solved_direct']:>6} "
                         f"{it['solved_rationalized']:>9}  "
                         f"{it['heldout_accuracy']:.3f} {ci(it['heldout_accuracy_ci']):17s}"
                         f"{it['heldout_sampled_accuracy']:.3f} "
                         f"{ci(it['heldout_sampled_accuracy_ci'])}")
        for key, what in (("paired_last_minus_first", "greedy"),
                          ("sampled_paired_last_minus_first", "sampled")):
            d = r[key]
            lines.append(f"last - iteration 0, {what} (paired): {d[0]:+.3f} "
                         f"[{d[1]:+.3f}, {d[2]:+.3f}]")
    return "\n".join(lines)
