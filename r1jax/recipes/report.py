"""The visual report: one self-contained `index.html` drawn from the recipes' workdirs.

`build(out_dir, sources)` reads the workdirs of the recipes that ran and writes
`<out_dir>/index.html` (inline SVG and CSS: no script, no network) and `<out_dir>/report.json`
(the numbers behind every figure and how long each took). `sources` maps a recipe to a
`Source(workdir, config)`:

  "tts"      a test-time scaling run (results.json, base/ or config.base_workdir's base/, orm/,
             prm/): 1. accuracy against generated tokens, 2. a PRM-scored path, 3. a beam search
             and an MCTS tree, 4. majority vote vs weighted Best-of-N on one problem;
  "r1_zero"  an R1-Zero run (metrics.jsonl, base/, grpo/): 5. one GRPO group, 6. next-token
             distributions at the decision point before and after RL, 7. the curves during RL;
  "r1", "star", "distill"   results.json with a `stages` list, an `iterations` list and a
             `methods` map: 8. their tables and charts.

Figures 2-6 run the library on the stored checkpoints (`search`, `verifiers`, `train`'s
rollouts and rule rewards, `grpo.group_advantages`, the model's logits); a recipe that did not
run gets a section that says so, never a figure.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import (checkpoint, grpo, model, pretrain, prompts, rewards, sampler, search, tasks,
                   train, verifiers)
from r1jax import svg
from r1jax.reporting import read_metrics
from r1jax.tokenizer import ByteTokenizer

SECTIONS = {
    "tts": "1. Test-time scaling: accuracy against generated tokens",
    "prm_path": "2. A PRM-scored reasoning path",
    "trees": "3. Beam search and MCTS trees",
    "votes": "4. Majority vote vs weighted Best-of-N on one problem",
    "grpo_group": "5. One GRPO group",
    "next_token": "6. Next-token distributions before and after RL",
    "r1_zero_curves": "7. R1-Zero during RL",
    "pipelines": "8. The R1 pipeline, STaR and distillation",
}
METHOD_LABELS = {"greedy": "greedy", "majority": "majority vote", "bon_orm": "BoN (ORM)",
                 "bon_prm": "BoN (PRM)", "weighted_bon": "weighted BoN (PRM)",
                 "beam": "beam search (PRM)", "dvts": "DVTS (PRM)", "mcts": "MCTS",
                 "pass_at_n": "pass@N (oracle)"}


@dataclasses.dataclass
class Source:
    """A recipe's workdir and the config it ran with (None where the report needs none)."""
    workdir: str
    config: Any = None


@dataclasses.dataclass(frozen=True)
class Options:
    """Sizes of what the report samples from the checkpoints."""
    seed: int = 0
    problems: int = 6           # held-out problems sampled for figures 2 and 4
    samples: int = 16           # samples per problem (figure 4's N)
    beam_width: int = 4         # figure 3's beam search: W beams, M expansions each
    beam_expansions: int = 3
    tree_max_steps: int = 4     # steps of figure 3's searches (keeps trees <= 64 nodes)
    mcts_simulations: int = 16
    grpo_prompts: int = 8       # figure 5: the group with the most varied rewards among these
    decision_problems: int = 100   # figure 6: P(guess) averaged over these held-out prompts


# ----------------------------------------------------------------------------- loading

def _restore(directory: str, target) -> tuple[Any, int]:
    with checkpoint.CheckpointManager(directory) as manager:
        restored = manager.restore(target={"params": target})
    return restored.params, restored.step


def load_policy(c, directory: str):
    """(model cfg, params, step) of the newest checkpoint of a tiny policy in `directory`."""
    cfg = model.ModelConfig.preset(c.model.preset, compute_dtype=c.model.compute_dtype)
    target = jax.eval_shape(lambda: model.init_params(cfg, jax.random.key(0)))
    params, step = _restore(directory, target)
    return cfg, params, step


def load_verifier(cfg, directory: str):
    """The params of a trained ORM / PRM (a value head over a copy of the policy trunk)."""
    target = jax.eval_shape(lambda: verifiers.init_verifier(
        model.init_params(cfg, jax.random.key(0)), cfg, jax.random.key(0)))
    return _restore(directory, target)


def _check_tiny(c, what: str) -> None:
    if c.model.path:
        raise ValueError(f"the report's {what} figures read tiny checkpoints; "
                         f"config.model.path={c.model.path!r} is not supported yet")


# ----------------------------------------------------------------------------- recording search

@dataclasses.dataclass
class RecordingProposer:
    """A `search.StepProposer` that records every (prefix, proposed steps) it served."""
    inner: Any
    calls: list = dataclasses.field(default_factory=list)

    def propose(self, prefixes, n, key):
        out = self.inner.propose(prefixes, n, key)
        self.calls += [(tuple(int(t) for t in p), row) for p, row in zip(prefixes, out)]
        return out


@dataclasses.dataclass
class RecordingScorer:
    """A `search.StepScorer` that records the step scores of every solution it scored, by the
    solution's token ids (question + steps)."""
    inner: Any
    scores: dict = dataclasses.field(default_factory=dict)

    def score(self, questions, solutions):
        out, read = self.inner.score(questions, solutions)
        for q, sol, s in zip(questions, solutions, out):
            self.scores[tuple(q) + tuple(i for st in sol for i in st.ids)] = list(s)
        return out, read


def beam_tree(calls, scores, question, chosen, aggregation: str) -> list[dict]:
    """The nodes of a recorded beam search: one per distinct proposed step of each expanded
    prefix (identical samples merged, counted), with the PRM score of its step, the aggregated
    score beam search ranked it by, whether it was expanded further and whether it lies on the
    chosen solution."""
    question = tuple(question)
    nodes = [{"parent": None, "ids": question, "text": "question", "info": "", "chosen": True}]
    index = {question: 0}
    chosen_prefixes = set()
    acc = question
    for st in chosen:
        acc = acc + tuple(st.ids)
        chosen_prefixes.add(acc)
    for prefix, steps in calls:
        for st in steps:
            ids = prefix + tuple(st.ids)
            if ids in index:
                nodes[index[ids]]["count"] += 1
                continue
            s = scores.get(ids, [])
            agg = float(search.aggregate([s], aggregation)[0]) if s else math.nan
            index[ids] = len(nodes)
            nodes.append({"parent": index[prefix], "ids": ids, "text": st.text, "count": 1,
                          "final": st.is_final, "score": s[-1] if s else math.nan,
                          "aggregate": agg, "chosen": ids in chosen_prefixes})
    expanded = {p for p, _ in calls}
    for n in nodes[1:]:
        n["expanded"] = n["ids"] in expanded
        n["dim"] = not (n["expanded"] or n["chosen"])
        n["info"] = (f"PRM {n['score']:.2f} {aggregation} {n['aggregate']:.2f}"
                     + (f" x{n['count']}" if n["count"] > 1 else "")
                     + (" final" if n["final"] else ""))
    return nodes


def mcts_tree(root, chosen) -> list[dict]:
    """The nodes of an MCTS tree (`search.Node`, depth-first): step text, visits N, mean value
    Q, prior P, whether it lies on the chosen solution."""
    chosen_ids = tuple(i for st in chosen for i in st.ids)
    nodes = []

    def walk(node, parent):
        ids = tuple(i for st in node.solution for i in st.ids)
        on_path = chosen_ids[:len(ids)] == ids
        me = len(nodes)
        nodes.append({"parent": parent, "text": node.solution[-1].text if node.solution
                      else "question", "visits": node.visits, "q": node.q, "prior": node.prior,
                      "chosen": on_path,
                      "info": f"N={node.visits} Q={node.q:.2f} P={node.prior:.2f}"})
        for ch in node.children:
            walk(ch, me)
    walk(root, None)
    return nodes


# ----------------------------------------------------------------------------- figures

def _fig(svg_text: str, caption: str, fig_id: str) -> str:
    return (f'<figure id="{fig_id}"><div class="scroll">{svg_text}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _not_run(what: str) -> str:
    return f'<p class="notrun">Not run: {html.escape(what)}</p>'


def _pct(x: float) -> str:
    return f"{x:.3f}"


def tts_curves_figure(results: dict) -> tuple[str, dict]:
    """Figure 1 from a test-time scaling results.json."""
    curves = results["curves"]
    order = [m for m in METHOD_LABELS if curves.get(m)]
    series = [{"label": METHOD_LABELS[m], "xs": [x["tokens"] for x in curves[m]],
               "ys": [x["accuracy"] for x in curves[m]],
               "lo": [x["ci"][0] for x in curves[m]], "hi": [x["ci"][1] for x in curves[m]],
               "dashed": m == "pass_at_n"} for m in order]
    chart = svg.line_chart(series, title="Held-out accuracy against generated tokens per problem",
                           xlabel="generated tokens per problem", ylabel="accuracy", xlog=True,
                           ylim=(0, 1), width=820, height=420)
    s = results.get("summary", {})
    best = {m: max(curves[m], key=lambda x: x["accuracy"]) for m in order}
    parts = [f"Each line is one search method on the same {results['num_problems']} held-out "
             f"problems, a point per budget N (vote / Best-of-N: N of "
             f"{results.get('samples_per_problem', '?')} samples per problem; tree search: one "
             "run per N); the shaded bands are 95% Wilson intervals over problems, and the "
             "dashed line is pass@N, the oracle that picks a correct sample when there is one."]
    if "greedy" in s:
        parts.append(f"Greedy decoding scores {_pct(s['greedy'])}; majority vote at "
                     f"N={s['majority_n']} scores {_pct(s['majority'])} "
                     f"({s['majority_minus_greedy']:+.3f}, paired 95% interval "
                     f"[{s['majority_minus_greedy_ci'][0]:+.3f}, "
                     f"{s['majority_minus_greedy_ci'][1]:+.3f}]).")
        parts.append(f"At N={s['largest_n']}: weighted BoN {_pct(s['weighted_bon_largest_n'])}, "
                     f"BoN by the PRM {_pct(s['bon_prm_largest_n'])}, BoN by the ORM "
                     f"{_pct(s['bon_orm_largest_n'])}.")
    parts.append("Best point of each method: " + "; ".join(
        f"{METHOD_LABELS[m]} {_pct(b['accuracy'])} at N={b['n']} ({b['tokens']:.0f} tokens)"
        for m, b in best.items()) + ".")
    data = {m: [{k: x[k] for k in ("n", "accuracy", "ci", "tokens")} for x in curves[m]]
            for m in order}
    return _fig(chart, " ".join(parts), "fig-tts"), data


class TTSContext:
    """The test-time scaling run's policy, PRM, ORM, held-out problems and proposer."""

    def __init__(self, src: Source, opts: Options):
        c = src.config
        _check_tiny(c, "test-time scaling")
        self.c, self.t, self.opts = c, c.tts, opts
        base_dir = os.path.join(c.base_workdir or src.workdir, "base")
        self.cfg, self.params, self.base_step = load_policy(c, base_dir)
        self.tok = ByteTokenizer()
        self.prm, self.prm_step = load_verifier(self.cfg, os.path.join(src.workdir, "prm"))
        self.scorer = search.PRMScorer(self.prm, self.cfg, self.tok.pad_id,
                                       batch_size=self.t.score_batch, bucket=32)
        self.problems = pretrain.load_problems(c, "test", max(opts.problems, 1),
                                               seed=c.seed + 1 + 1000 * self.t.seed)
        self.questions = [tuple(self.tok.encode(prompts.render(c.task.template, p.question)))
                          for p in self.problems]
        self.proposer = search.SamplerProposer(
            self.params, self.cfg, self.tok,
            sampler.SamplingConfig(max_new_tokens=self.t.step_max_new_tokens,
                                   temperature=self.t.temperature),
            delimiter=tasks.STEP_DELIMITER)
        self.key = jax.random.key(opts.seed)
        self._samples = None

    def correct(self, p: int, answer: Optional[str]) -> bool:
        return tasks.check(self.problems[p], answer)

    def samples(self):
        """opts.samples step-wise samples of each problem with their PRM step scores."""
        if self._samples is None:
            sols, _ = search.sample_solutions(self.proposer, self.questions, self.opts.samples,
                                              jax.random.fold_in(self.key, 1),
                                              max_steps=self.t.max_steps)
            flat_q = [q for q, row in zip(self.questions, sols) for _ in row]
            steps, _ = self.scorer.score(flat_q, [s for row in sols for s in row])
            n = self.opts.samples
            self._samples = (sols, [steps[i * n:(i + 1) * n] for i in range(len(sols))])
        return self._samples


def _answer(sol) -> Optional[str]:
    return rewards.extract_answer("".join(s.text for s in sol))


def prm_path_figure(ctx: TTSContext) -> tuple[str, dict]:
    """Figure 2: one sampled solution, each step with its PRM score, the weakest marked. An
    incorrect multi-step solution is preferred (the PRM should find where it went wrong)."""
    sols, scores = ctx.samples()
    cands = [(p, i) for p, row in enumerate(sols) for i, s in enumerate(row) if len(s) > 1]
    wrong = [(p, i) for p, i in cands if not ctx.correct(p, _answer(sols[p][i]))]
    right = [(p, i) for p, i in cands if ctx.correct(p, _answer(sols[p][i]))]
    pick = (wrong or cands or [(0, 0)])[0]
    p, i = pick
    sol, sc = sols[p][i], scores[p][i]
    weak = int(np.argmin(sc))
    rows = [{"label": f"step {j + 1}: {st.text.strip() or st.text}", "value": float(v),
             "text": f"{v:.3f}" + ("  weakest step" if j == weak else ""),
             "mark": j == weak, "color": "#d62728" if j == weak else svg.PALETTE[0]}
            for j, (st, v) in enumerate(zip(sol, sc))]
    problem = ctx.problems[p]
    answer = _answer(sol)
    ok = ctx.correct(p, answer)
    chart = svg.bar_rows(rows, title=f"PRM score of each step (probability the solution is "
                         f"still on a correct path)", label_chars=44)
    contrast = ""
    if right:
        rp, ri = next(((a, b) for a, b in right if a == p), right[0])
        contrast = (f" For contrast, a correct sample of problem {rp + 1} has step scores "
                    + ", ".join(f"{v:.2f}" for v in scores[rp][ri]) + ".")
    caption = (f"Held-out problem {p + 1}: <code>{html.escape(problem.question)}</code> "
               f"(gold answer {html.escape(str(problem.answer))}). One of {ctx.opts.samples} "
               f"solutions sampled step by step from the base policy at temperature "
               f"{ctx.t.temperature} (a step ends at a newline); its final answer is "
               f"{html.escape(str(answer))}, which is {'correct' if ok else 'wrong'}. The PRM "
               f"(trained on Monte Carlo step labels, checkpoint step {ctx.prm_step}) scores "
               f"its {len(sol)} steps " + ", ".join(f"{v:.3f}" for v in sc)
               + f"; the weakest is step {weak + 1} ({sc[weak]:.3f}), marked in red. "
               f"Solutions are ranked by the {ctx.t.aggregation} of these scores "
               f"({float(search.aggregate([sc], ctx.t.aggregation)[0]):.3f} here)." + contrast)
    data = {"problem": problem.question, "gold": str(problem.answer), "answer": answer,
            "correct": ok, "steps": [s.text for s in sol], "scores": [float(v) for v in sc],
            "weakest": weak}
    return _fig(chart, caption, "fig-prm-path"), data


def votes_figure(ctx: TTSContext) -> tuple[str, dict]:
    """Figure 4: one problem's N samples pooled by answer: counts, summed PRM scores, and the
    choices of majority vote and weighted Best-of-N (`search.majority_vote`,
    `search.weighted_vote`). A problem where the two disagree is preferred."""
    sols, scores = ctx.samples()
    per = []
    for p, (row, sc) in enumerate(zip(sols, scores)):
        answers = [_answer(s) for s in row]
        agg = [float(x) for x in search.aggregate(sc, ctx.t.aggregation)]
        maj = search.majority_vote(answers)
        wv = search.weighted_vote(answers, [0.0 if math.isnan(x) else x for x in agg])
        per.append((p, answers, agg, maj, wv))

    def rank(item):
        p, _, _, maj, wv = item
        differ = (maj is None) != (wv is None) or (
            maj is not None and rewards.canonical_answer(maj) != rewards.canonical_answer(wv))
        return (not differ, not (differ and ctx.correct(p, wv)), p)
    p, answers, agg, maj, wv = min(per, key=rank)
    pools: dict[str, dict] = {}
    for a, s in zip(answers, agg):
        key = "(none)" if a is None else rewards.canonical_answer(a)
        d = pools.setdefault(key, {"answer": "(no answer)" if a is None else a, "count": 0,
                                   "score": 0.0})
        d["count"] += 1
        d["score"] += 0.0 if math.isnan(s) else s
    ordered = sorted(pools.values(), key=lambda d: -d["count"])

    def note(d):
        marks = []
        a = None if d["answer"] == "(no answer)" else d["answer"]
        if a is not None and ctx.correct(p, a):
            marks.append("gold")
        if maj is not None and a is not None and rewards.answers_equal(a, maj):
            marks.append("majority")
        if wv is not None and a is not None and rewards.answers_equal(a, wv):
            marks.append("weighted")
        return " ".join(marks)
    groups = [{"label": d["answer"], "values": [d["count"], d["score"]],
               "texts": [str(d["count"]), f"{d['score']:.2f}"], "note": note(d)}
              for d in ordered[:10]]
    chart = svg.grouped_bars(groups, ["count (majority vote)",
                                      f"summed PRM score ({ctx.t.aggregation})"],
                             title=f"{len(answers)} samples pooled by answer")
    problem = ctx.problems[p]
    caption = (f"Held-out problem {p + 1}: <code>{html.escape(problem.question)}</code>, gold "
               f"answer {html.escape(str(problem.answer))}. {len(answers)} samples of the base "
               f"policy give {len(pools)} distinct answers: "
               + "; ".join(f"{html.escape(d['answer'])} &times;{d['count']} (summed score "
                           f"{d['score']:.2f})" for d in ordered)
               + f". Majority vote picks {html.escape(str(maj))} "
               f"({'correct' if ctx.correct(p, maj) else 'wrong'}); weighted Best-of-N, the "
               f"answer with the highest summed PRM score, picks {html.escape(str(wv))} "
               f"({'correct' if ctx.correct(p, wv) else 'wrong'}). Bars are scaled to each "
               "series' largest value; the numbers above them are the real counts and sums. "
               f"(Of the {len(per)} problems sampled, the two methods disagree on "
               f"{sum(1 for item in per if not rank(item)[0])}.)")
    data = {"problem": problem.question, "gold": str(problem.answer),
            "pools": ordered, "majority": maj, "weighted": wv}
    return _fig(chart, caption, "fig-votes"), data


def trees_figure(ctx: TTSContext) -> tuple[str, dict]:
    """Figure 3: a PRM beam search and an MCTS on one held-out problem (the first), recorded
    node by node."""
    o, t = ctx.opts, ctx.t
    q = [ctx.questions[0]]
    proposer = RecordingProposer(ctx.proposer)
    scorer = RecordingScorer(ctx.scorer)
    beam = search.beam_search(proposer, scorer, q, jax.random.fold_in(ctx.key, 3),
                              beam_width=o.beam_width, expansions=o.beam_expansions,
                              max_steps=o.tree_max_steps, aggregation=t.aggregation)[0]
    bnodes = beam_tree(proposer.calls, scorer.scores, q[0], beam.steps, t.aggregation)
    results, roots = search.mcts(ctx.proposer, ctx.scorer, q, jax.random.fold_in(ctx.key, 4),
                                 num_simulations=o.mcts_simulations, expansions=t.mcts_expansions,
                                 c=t.mcts_c, rule=t.mcts_rule, max_steps=o.tree_max_steps,
                                 aggregation=t.aggregation, final=t.mcts_final,
                                 return_trees=True)
    mres = results[0]
    mnodes = mcts_tree(roots[0], mres.steps)
    problem = ctx.problems[0]
    for nodes in (bnodes, mnodes):
        nodes[0]["text"] = f"Q: {problem.question}"
    out = []
    for name, nodes, res, what in (
            ("Beam search", bnodes, beam,
             f"width {o.beam_width}, {o.beam_expansions} expansions per beam "
             f"({o.beam_width * o.beam_expansions} first steps), at most {o.tree_max_steps} "
             f"steps; each node shows its step, the PRM score of that step and the "
             f"{t.aggregation} over the path that beam search ranks by (xk: k identical "
             "samples); grey nodes were pruned, red ones are the chosen solution"),
            ("MCTS", mnodes, mres,
             f"{o.mcts_simulations} simulations of {t.mcts_rule.upper()} selection "
             f"(c = {t.mcts_c}), {t.mcts_expansions} sampled steps per expansion, rollouts "
             f"valued by the PRM ({t.aggregation}); each node shows its step, visit count N, "
             "mean rollout value Q and prior P; red nodes lie on the chosen solution "
             f"(final rule: {t.mcts_final})")):
        ok = ctx.correct(0, res.answer)
        chart = svg.tree(nodes, title=f"{name}: {len(nodes)} nodes")
        caption = (f"{name} on held-out problem 1, <code>{html.escape(problem.question)}"
                   f"</code> (gold {html.escape(str(problem.answer))}): {what}. It generated "
                   f"{res.generated_tokens} tokens, the verifier read {res.verifier_tokens}, "
                   f"and the tree has {len(nodes)} nodes; the chosen solution "
                   f"(score {res.score:.3f}) answers {html.escape(str(res.answer))}, which is "
                   f"{'correct' if ok else 'wrong'}.")
        out.append(_fig(chart, caption, f"fig-{name.split()[0].lower()}"))
    data = {"beam": {"nodes": len(bnodes), "answer": beam.answer,
                     "generated_tokens": beam.generated_tokens},
            "mcts": {"nodes": len(mnodes), "answer": mres.answer,
                     "root_visits": roots[0].visits, "generated_tokens": mres.generated_tokens}}
    return "".join(out), data


# ----------------------------------------------------------------------------- R1-Zero figures

class R1ZeroContext:
    def __init__(self, src: Source, opts: Options):
        c = src.config
        _check_tiny(c, "R1-Zero")
        self.c, self.opts, self.workdir = c, opts, src.workdir
        self.tok = ByteTokenizer()
        self.cfg, self.base, self.base_step = load_policy(c, os.path.join(src.workdir, "base"))
        self._final = None

    def final(self):
        if self._final is None:
            _, params, step = load_policy(self.c, os.path.join(self.workdir, "grpo"))
            self._final = (params, step)
        return self._final


def grpo_group_figure(ctx: R1ZeroContext) -> tuple[str, dict]:
    """Figure 5: the first GRPO step's problems sampled by the base policy (the policy of step
    0) with the run's rollout settings (`train.collect_rollouts`, rule rewards), and the group
    with the most varied rewards, its advantages by `grpo.group_advantages`."""
    c, g = ctx.c, ctx.c.grpo
    rollout = train.RolloutConfig(
        prompts_per_step=ctx.opts.grpo_prompts, max_new_tokens=g.max_new_tokens,
        max_prompt_tokens=g.max_prompt_tokens, temperature=g.temperature,
        template=c.task.template, accuracy_weight=g.accuracy_weight,
        format_weight=g.format_weight, language_weight=g.language_weight)
    gcfg = grpo.GRPOConfig(num_generations=g.num_generations, advantage_scale=g.advantage_scale)
    problems = tasks.generate(c.task.name, c.seed * 1_000_003, ctx.opts.grpo_prompts,
                              split="train", **pretrain.difficulty(c))
    probs, roll, rew, _ = train.collect_rollouts(
        ctx.base, ctx.cfg, ctx.tok, lambda _r: problems,
        jax.random.fold_in(jax.random.key(ctx.opts.seed), 5), rollout, gcfg)
    adv = np.asarray(grpo.group_advantages(jnp.asarray(rew["reward"]), gcfg.advantage_scale))
    p = int(np.argmax(np.std(rew["reward"], axis=1)))
    texts = roll.texts(ctx.tok)[p]
    r, a = rew["reward"][p], adv[p]
    amax = float(np.max(np.abs(a))) or 1.0
    rows = [{"label": t.strip(), "value": abs(float(x)) / amax,
             "color": "#2ca02c" if x > 0 else "#d62728",
             "text": f"reward {float(rr):.2f}  advantage {float(x):+.2f}"}
            for t, rr, x in zip(texts, r, a)]
    chart = svg.bar_rows(rows, title="G completions of one prompt: |advantage| (green > 0, "
                         "red < 0)", label_chars=52, bar_w=160)
    table = ("<details><summary>The completions in full</summary><table><tr><th>#</th>"
             "<th>completion</th><th>accuracy</th><th>format</th><th>reward</th>"
             "<th>advantage</th></tr>" + "".join(
                 f"<tr><td>{i + 1}</td><td><pre>{html.escape(t)}</pre></td>"
                 f"<td>{rew['correct'][p][i]:.0f}</td><td>{rew['format'][p][i]:.0f}</td>"
                 f"<td>{r[i]:.2f}</td><td>{a[i]:+.3f}</td></tr>" for i, t in enumerate(texts))
             + "</table></details>")
    problem = probs[p]
    caption = (f"The prompt <code>{html.escape(prompts.render(c.task.template, problem.question))}"
               f"</code> (gold answer {html.escape(str(problem.answer))}), one of the "
               f"{len(probs)} problems of the run's first GRPO step, sampled "
               f"G = {g.num_generations} times by the base policy (the policy at step 0) at "
               f"temperature {g.temperature}. Reward = {g.accuracy_weight} &times; accuracy + "
               f"{g.format_weight} &times; format: " + ", ".join(f"{x:.2f}" for x in r)
               + f" (mean {float(np.mean(r)):.2f}, std {float(np.std(r, ddof=1)):.2f}). "
               f"Advantages ({g.advantage_scale}: reward minus the group mean, divided by the "
               "group's standard deviation): " + ", ".join(f"{x:+.2f}" for x in a)
               + ". GRPO raises the log-probability of the green completions and lowers the red "
               f"ones; no value network is needed. This group has the most varied rewards "
               f"of the {len(probs)} (groups whose rewards are all equal get zero advantages).")
    data = {"prompt": problem.question, "rewards": [float(x) for x in r],
            "advantages": [float(x) for x in a], "completions": texts}
    return _fig(chart, caption, "fig-grpo-group") + table, data


def decision_logits(cfg, params, tok, texts: list[str]) -> np.ndarray:
    """Next-token probabilities [len(texts), V] after each text (right-padded batch, read at
    each text's last position)."""
    ids = [tok.encode(t) for t in texts]
    T = -(-max(map(len, ids)) // 16) * 16
    arr = np.full((len(ids), T), tok.pad_id, np.int32)
    for i, x in enumerate(ids):
        arr[i, :len(x)] = x
    logits = model.forward(params, jnp.asarray(arr), cfg)
    last = jnp.asarray([len(x) - 1 for x in ids])
    return np.asarray(jax.nn.softmax(logits[jnp.arange(len(ids)), last], axis=-1))


def continuations(cfg, params, tok, text: str, first_ids, n: int) -> list[str]:
    """The greedy continuation (n tokens) of `text` followed by each of `first_ids`, as text
    starting with that token."""
    ids = tok.encode(text)
    out = sampler.generate(params, cfg, [ids + [int(i)] for i in first_ids], jax.random.key(0),
                           sampler.SamplingConfig(max_new_tokens=n, temperature=0.0),
                           pad_id=tok.pad_id)
    toks, lens = np.asarray(out.tokens)[:, 0], np.asarray(out.lengths)[:, 0]
    return [tok.decode([int(i)] + toks[r, :lens[r]].tolist()) for r, i in enumerate(first_ids)]


def next_token_figure(ctx: R1ZeroContext) -> tuple[str, dict]:
    """Figure 6: the next-token distribution right after " <think>" (the point where a
    completion either closes the tag at once, a bare guess, or starts working the steps), for
    the base and the final policy."""
    c = ctx.c
    final, step = ctx.final()
    problems = pretrain.load_problems(c, "test", ctx.opts.decision_problems, seed=c.seed + 1)
    texts = [prompts.render(c.task.template, p.question) + " <think>" for p in problems]
    guess_id = ctx.tok.encode("<")[0]
    before = decision_logits(ctx.cfg, ctx.base, ctx.tok, texts)
    after = decision_logits(ctx.cfg, final, ctx.tok, texts)
    top = sorted(set(np.argsort(-before[0])[:6]) | set(np.argsort(-after[0])[:6]),
                 key=lambda i: -(before[0][i] + after[0][i]))

    charts = []
    for label, params, probs_ in (("base policy (before RL)", ctx.base, before),
                                  (f"after {step} GRPO steps", final, after)):
        conts = continuations(ctx.cfg, params, ctx.tok, texts[0], top, 14)
        rows = [{"label": repr(ctx.tok.decode([int(i)])) + " -> " + cont,
                 "value": float(probs_[0][i]), "text": f"{probs_[0][i]:.3f}",
                 "mark": int(i) == guess_id} for i, cont in zip(top, conts)]
        charts.append(svg.bar_rows(rows, title=label, label_chars=34, bar_w=120))
    g0, g1 = float(before[:, guess_id].mean()), float(after[:, guess_id].mean())
    caption = (f"The prompt <code>{html.escape(texts[0])}</code> ends at the decision point: "
               f"the next token is &lt; for a bare guess (<code> &lt;/think&gt; &lt;answer&gt;"
               f"...</code>) or the first character of a worked step. Bars: the probability of "
               f"the most likely next tokens under the base policy (left) and after "
               f"{step} GRPO steps (right), each followed by that policy's greedy continuation "
               f"(-&gt;); the guess token is in red. Here P(guess) goes from "
               f"{before[0][guess_id]:.3f} to {after[0][guess_id]:.3f}; averaged over "
               f"{len(problems)} held-out prompts it goes from {g0:.3f} to {g1:.3f}.")
    data = {"p_guess_before": g0, "p_guess_after": g1,
            "first": {"before": float(before[0][guess_id]), "after": float(after[0][guess_id])},
            "grpo_step": step}
    return _fig('<div class="row">' + "".join(charts) + "</div>", caption, "fig-next-token"), data


def r1_zero_curves_figure(workdir: str) -> tuple[str, dict]:
    """Figure 7 from the run's metrics.jsonl: train-rollout accuracy, format rate and response
    length per step, and the held-out evaluations (with their 95% bands)."""
    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"), "grpo")

    def pts(key):
        got = [r for r in rows if isinstance(r.get(key), (int, float))]
        return [r["step"] for r in got], [float(r[key]) for r in got], got

    def series(label, key, with_band=False):
        xs, ys, got = pts(key)
        s = {"label": label, "xs": xs, "ys": ys}
        if with_band and all(isinstance(r.get(f"{key}_ci"), list) for r in got):
            s.update(lo=[r[f"{key}_ci"][0] for r in got], hi=[r[f"{key}_ci"][1] for r in got])
        return s
    panels = [
        ("accuracy", [series("train rollouts", "accuracy"),
                      series("held-out, sampled", "eval_accuracy", True),
                      series("held-out, greedy", "eval_greedy_accuracy", True)], (0, 1)),
        ("format rate", [series("train rollouts", "format_rate"),
                         series("held-out, sampled", "eval_format_rate")], (0, 1)),
        ("response length (tokens)", [series("train rollouts", "response_length"),
                                      series("held-out, sampled", "eval_mean_length")], None),
        ("language consistency", [series("train rollouts", "language_consistency"),
                                  series("held-out, sampled", "eval_language_consistency")],
         (0, 1)),
    ]
    charts = [svg.line_chart([s for s in ss if s["xs"]], title=t, xlabel="GRPO step", ylabel=t,
                             ylim=ylim, width=520, height=280)
              for t, ss, ylim in panels if any(s["xs"] for s in ss)]

    def first_last(key):
        _, ys, got = pts(key)
        return (ys[0], ys[-1], got[0]["step"], got[-1]["step"]) if ys else None
    facts = []
    for label, key in (("train-rollout accuracy", "accuracy"), ("format rate", "format_rate"),
                       ("response length", "response_length"),
                       ("held-out greedy accuracy", "eval_greedy_accuracy"),
                       ("held-out sampled accuracy", "eval_accuracy"),
                       ("held-out language consistency", "eval_language_consistency")):
        fl = first_last(key)
        if fl:
            facts.append(f"{label} {fl[0]:.3f} at step {fl[2]} and {fl[1]:.3f} at step {fl[3]}")
    steps = max((r["step"] for r in rows), default=0)
    caption = (f"R1-Zero's GRPO run, {steps} steps: each panel shows a quantity against the "
               "step, on the step's own training rollouts (one point per step) and on the "
               "held-out evaluations (every few steps; accuracies with 95% interval bands). "
               + "; ".join(facts) + ".")
    data = {key: first_last(key) for key in ("accuracy", "format_rate", "response_length",
                                             "eval_greedy_accuracy", "eval_accuracy",
                                             "eval_language_consistency")}
    return _fig('<div class="row">' + "".join(charts) + "</div>", caption, "fig-r1-zero"), data


# ----------------------------------------------------------------------------- section 8

def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def records_table(records: list[tuple[str, dict]]) -> str:
    """An HTML table of records (name, fields): a column per scalar field any record has."""
    cols = list(dict.fromkeys(k for _, d in records for k in _scalars(d)))

    def cell(v):
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    return ("<table><tr><th></th>" + "".join(f"<th>{html.escape(k)}</th>" for k in cols)
            + "</tr>" + "".join(
                f"<tr><td>{html.escape(n)}</td>"
                + "".join(f"<td>{cell(_scalars(d).get(k))}</td>" for k in cols) + "</tr>"
                for n, d in records) + "</table>")


def _records(results: dict, key: str) -> list[tuple[str, dict]]:
    """(name, fields) of a results.json's `stages` / `iterations` list or `methods` map."""
    value = results.get(key)
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items() if isinstance(v, dict)]
    if isinstance(value, list):
        return [(str(d.get("name", d.get("stage", d.get("iteration", i)))), d)
                for i, d in enumerate(value) if isinstance(d, dict)]
    raise ValueError(f"results.json has no {key!r} list or map")


def _accuracy_key(records) -> Optional[str]:
    keys = [k for _, d in records for k in _scalars(d) if "accuracy" in k and "ci" not in k]
    return next(iter(dict.fromkeys(keys)), None)


PIPELINES = (("r1", "stages", "The R1 pipeline", "five stages, from the cold-start SFT to the "
              "final RL"),
             ("star", "iterations", "STaR", "rejection-sampling fine-tuning iterations"),
             ("distill", "methods", "Distillation", "teacher and student methods"))


def pipeline_section(name: str, src: Optional[Source]) -> tuple[str, dict]:
    """One recipe of section 8: a chart of its accuracy-like field per record and a table of
    every scalar field, or "not run"."""
    _, key, title, what = next(p for p in PIPELINES if p[0] == name)
    path = None if src is None else os.path.join(src.workdir, "results.json")
    if path is None or not os.path.exists(path):
        where = "no workdir given" if src is None else f"no results.json in {src.workdir}"
        return (f"<h3>{title}</h3>" + _not_run(f"{title} ({where}); no figure is drawn."),
                {"run": False})
    with open(path, encoding="utf-8") as f:
        records = _records(json.load(f), key)
    acc = _accuracy_key(records)
    body = f"<h3>{title}</h3>"
    if acc:
        have = [(n, _scalars(d)[acc]) for n, d in records if acc in _scalars(d)]
        chart = svg.bar_rows([{"label": n, "value": float(v), "text": f"{v:.3f}"}
                              for n, v in have], title=f"{acc} per {key[:-1]}",
                             value_max=max(1.0, max(v for _, v in have)), label_chars=28)
        body += _fig(chart, f"{title}: {acc} of each of its {len(records)} {what} "
                     f"(from {html.escape(path)}): " + "; ".join(
                         f"{html.escape(n)} {v:.3f}" for n, v in have) + ".",
                     f"fig-{name}")
    body += records_table(records)
    return body, {"run": True, "records": len(records), "accuracy_key": acc}


# ----------------------------------------------------------------------------- the page

CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
h1{font-size:1.7em}h2{margin-top:2em;border-bottom:1px solid #ccc}
figure{margin:1em 0}figcaption{font-size:.92em;color:#333;max-width:60em}
.scroll{overflow-x:auto}.row{display:flex;flex-wrap:wrap;gap:12px}
.notrun{color:#a00;font-style:italic}table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
pre{margin:0;white-space:pre-wrap}code{background:#f4f4f4;white-space:pre-wrap}
"""


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(SECTIONS[key])}</h2>{body}</section>'


def build(out_dir: str, sources: dict[str, Optional[Source]], opts: Options = Options(),
          log: Callable[[str], None] = lambda _m: None) -> dict:
    """Writes `<out_dir>/index.html` and `<out_dir>/report.json` from the sources (see the
    module docstring); returns report.json's content."""
    os.makedirs(out_dir, exist_ok=True)
    t_all = time.time()
    sections, data, seconds = {}, {}, {}

    def run(key, fn, *args):
        t0 = time.time()
        body, data[key] = fn(*args)
        seconds[key] = round(time.time() - t0, 1)
        log(f"{key}: {seconds[key]:.0f} s")
        return body

    tts = sources.get("tts")
    if tts is not None and os.path.exists(os.path.join(tts.workdir, "results.json")):
        with open(os.path.join(tts.workdir, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
        sections["tts"] = run("tts", tts_curves_figure, results)
        ctx = TTSContext(tts, opts)
        sections["prm_path"] = run("prm_path", prm_path_figure, ctx)
        sections["trees"] = run("trees", trees_figure, ctx)
        sections["votes"] = run("votes", votes_figure, ctx)
    else:
        for key in ("tts", "prm_path", "trees", "votes"):
            sections[key] = _not_run("the test-time scaling recipe (no workdir with "
                                     "results.json given); no figure is drawn.")
    r0 = sources.get("r1_zero")
    if r0 is not None and os.path.exists(os.path.join(r0.workdir, "metrics.jsonl")):
        ctx0 = R1ZeroContext(r0, opts)
        sections["grpo_group"] = run("grpo_group", grpo_group_figure, ctx0)
        sections["next_token"] = run("next_token", next_token_figure, ctx0)
        sections["r1_zero_curves"] = run("r1_zero_curves", r1_zero_curves_figure, r0.workdir)
    else:
        for key in ("grpo_group", "next_token", "r1_zero_curves"):
            sections[key] = _not_run("the R1-Zero recipe (no workdir given); no figure is "
                                     "drawn.")
    parts = []
    for name, *_ in PIPELINES:
        body, data[name] = pipeline_section(name, sources.get(name))
        parts.append(body)
    sections["pipelines"] = "".join(parts)
    seconds["total"] = round(time.time() - t_all, 1)
    given = {k: (v.workdir if v else None) for k, v in sources.items()}
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>r1jax: what happened inside the runs</title>"
            f"<style>{CSS}</style></head><body><h1>r1jax: what happened inside the runs</h1>"
            "<p>Every figure below is drawn from the runs' own files and checkpoints (the "
            "library's search, verifiers, rollouts and GRPO advantages run again on the stored "
            "models); captions give the numbers behind them. Workdirs: "
            + ", ".join(f"{html.escape(k)}: <code>{html.escape(str(v))}</code>"
                        for k, v in given.items()) + ".</p>"
            + "".join(_section(k, sections[k]) for k in SECTIONS) + "</body></html>")
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    report = {"sources": given, "sections": list(SECTIONS.values()), "figures": data,
              "seconds": seconds}
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    return report
