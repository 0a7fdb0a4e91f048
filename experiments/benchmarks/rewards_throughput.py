"""Rule-reward throughput on CPU: format + accuracy rewards on 512-token (~2 KB) completions.

    python experiments/benchmarks/rewards_throughput.py [--num=20000] [--chars=2048]

Single python thread (one core). Target: >= 20,000 completions/s, so rewards never slow RL.
"""
import random
import time

from absl import app, flags

from r1jax import rewards, tasks

_NUM = flags.DEFINE_integer("num", 20_000, "completions per timed pass")
_CHARS = flags.DEFINE_integer("chars", 2048, "approximate characters per completion (~512 tokens)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed passes; the best is reported")


def make_completions(n: int, chars: int, seed: int = 0) -> list[tuple[str, str]]:
    """(completion, gold answer) pairs: long worked solutions in several shapes (well formatted,
    unformatted, truncated, several answers, answers with commas and fractions)."""
    rng = random.Random(seed)
    problems = tasks.generate("arithmetic", seed, 256, num_ops=(4, 6), digits=(2, 3))
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        s = tasks.solve(p, rng, error_rate=0.2, language=rng.choice(tasks.LANGUAGES))
        steps = s.reasoning
        reasoning = (steps + tasks.STEP_DELIMITER) * max(1, chars // (len(steps) + 1))
        answer = rng.choice((s.answer, f"{int(s.answer):,}", f"{s.answer}.0", f"\\boxed{{{s.answer}}}"))
        shape = i % 5
        if shape == 0:
            text = f" <think>{reasoning}</think> <answer>{answer}</answer>"
        elif shape == 1:
            text = f" {reasoning}The answer is {answer}."
        elif shape == 2:
            text = f" <think>{reasoning}"[:chars]
        elif shape == 3:
            text = f" <think>{reasoning}</think> <answer>1/2</answer> <answer>{answer}</answer>"
        else:
            text = f" <think>{reasoning}</think>\n<answer>{answer}</answer>\n"
        out.append((text, p.answer))
    return out


def main(argv):
    del argv
    data = make_completions(_NUM.value, _CHARS.value)
    mean_chars = sum(len(t) for t, _ in data) / len(data)
    best, total = float("inf"), 0.0
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        total = 0.0
        for text, gold in data:
            total += rewards.format_reward(text) + rewards.accuracy_reward(text, gold)
        best = min(best, time.perf_counter() - start)
    rate = len(data) / best
    print(f"completions: {len(data)}, mean length: {mean_chars:.0f} chars, "
          f"mean format+accuracy: {total / len(data):.3f}")
    print(f"format + accuracy rewards: {rate:,.0f} completions/s on one core "
          f"({'meets' if rate >= 20_000 else 'MISSES'} the 20,000/s target)")


if __name__ == "__main__":
    app.run(main)
