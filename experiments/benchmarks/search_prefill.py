"""Prefill tokens and wall time per problem of beam search, DVTS and MCTS at N = 8 on the tiny
test-time scaling base, with the rule reward as the scorer (prefill counts do not depend on
verifier quality).

  python experiments/benchmarks/search_prefill.py --base_workdir runs/tts0 --problems 20

reuses the base pretrained into runs/tts0/base by
`experiments/test_time_scaling.py --config configs/test_time_scaling.py:tiny --workdir runs/tts0`.
Prefill is counted by the sampler's own `PREFILL_TOKENS` (prompt tokens, with bucket padding, and
the one token per kept row that `continue_rows` runs again), or, on a checkout without it, by
wrapping `sampler._prefill_fn` (the jitted prefill of every sampler call then). The last of
--reps repetitions is timed, fully compiled (it repeats an earlier repetition's key). Runs on an
older checkout too (PYTHONPATH=<checkout>), which is how the "before" row was measured:
`git worktree add /tmp/before dbb438c` then `PYTHONPATH=/tmp/before python ...` (that code keeps
search state as text: it decodes, re-encodes and re-prefills each prefix at every step).
"""
import argparse
import importlib.util
import json
import pathlib
import time

import jax
import numpy as np

from r1jax import prompts as prompts_lib
from r1jax import sampler, search, tasks
from r1jax.recipes import test_time_scaling as scaling

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "test_time_scaling.py"
COUNT = getattr(sampler, "PREFILL_TOKENS", None) or {"prompt": 0, "padded": 0, "refed": 0}
_prefill = sampler._prefill_fn


def _counting_prefill(params, tokens_PT, lengths_P, **kw):
    COUNT["prompt"] += int(np.asarray(lengths_P).sum())
    COUNT["padded"] += int(np.prod(tokens_PT.shape))
    return _prefill(params, tokens_PT, lengths_P, **kw)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base_workdir", required=True, help="holds base/ (a pretrained tiny base)")
    p.add_argument("--problems", type=int, default=20)
    p.add_argument("--methods", default="beam,dvts,mcts")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("tts_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("tiny")
    c.unlock()
    c.base_workdir = args.base_workdir
    c.lock()
    if not hasattr(sampler, "PREFILL_TOKENS"):
        sampler._prefill_fn = _counting_prefill
    cfg, tok, params = scaling.base_policy(c, args.base_workdir, show_progress=False)
    t, P, N, M = c.tts, args.problems, 8, 4
    from r1jax import pretrain
    problems = pretrain.load_problems(c, "test", P, seed=c.seed + 1 + 1000 * t.seed)
    texts = [prompts_lib.render(c.task.template, q.question) for q in problems]
    token_level = "ids" in search.Step.__dataclass_fields__
    questions = [tuple(tok.encode(q)) for q in texts] if token_level else texts
    by_answer = {q.answer: q for q in problems}
    scorer = search.RuleScorer({q: pr.answer for q, pr in zip(questions, problems)},
                               check=lambda text, a: tasks.task_accuracy_reward(by_answer[a],
                                                                                text))
    def proposer():  # a new one per run: nothing cached from an earlier run
        if hasattr(scaling, "make_proposer"):
            return scaling.make_proposer(c, cfg, tok, params)
        return scaling.ChunkedProposer(search.SamplerProposer(
            params, cfg, tok, sampler.SamplingConfig(max_new_tokens=t.step_max_new_tokens,
                                                     temperature=t.temperature),
            delimiter=tasks.STEP_DELIMITER, add_bos=False), t.batch_rows)
    common = dict(max_steps=t.max_steps, aggregation="last")
    run = {
        "beam": lambda k: search.beam_search(proposer(), scorer, questions, k,
                                             beam_width=N // M, expansions=M, **common),
        "dvts": lambda k: search.dvts(proposer(), scorer, questions, k, n_subtrees=N // M,
                                      expansions=M, **common),
        "mcts": lambda k: search.mcts(proposer(), scorer, questions, k, num_simulations=N,
                                      expansions=t.mcts_expansions, c=t.mcts_c,
                                      rule=t.mcts_rule, max_steps=t.max_steps,
                                      aggregation="last", final=t.mcts_final),
    }
    print("| method (N = 8) | prefill tokens / problem | padded | re-run tokens / problem | "
          "wall s / problem | generated tokens / problem | accuracy |\n"
          "|---|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        for rep in range(args.reps):
            COUNT.update(prompt=0, padded=0, refed=0)
            tic = time.perf_counter()
            results = run[name](jax.random.key(17 + rep % 2))
            wall = time.perf_counter() - tic
        acc = float(np.mean([tasks.check(q, r.answer) for q, r in zip(problems, results)]))
        gen = float(np.mean([r.generated_tokens for r in results]))
        print(f"| {name} | {COUNT['prompt'] / P:.1f} | {COUNT['padded'] / P:.1f} | "
              f"{COUNT['refed'] / P:.1f} | {wall / P:.3f} | {gen:.1f} | {acc:.2f} |", flush=True)


if __name__ == "__main__":
    main()
