"""Run outputs: metrics JSONL (intervals kept as [lo, hi]), TensorBoard scalars and text, and
plots that draw a held-out accuracy's interval as a band."""
import json

import numpy as np

from r1jax import reporting


def test_metrics_keep_intervals_and_last_row_wins(tmp_path):
    w = reporting.MetricWriter(str(tmp_path))
    w.write(1, {"eval_accuracy": np.float32(0.5), "eval_accuracy_ci": (0.4, 0.6)}, "grpo")
    w.write(1, {"eval_accuracy": 0.55, "eval_accuracy_ci": [0.45, 0.65]}, "grpo")
    w.write_text(1, "completions", "<think>2+2=4</think> <answer>4</answer>", "grpo")
    w.close()
    rows = reporting.read_metrics(str(tmp_path / "metrics.jsonl"), "grpo")
    assert rows == [{"step": 1, "stage": "grpo", "eval_accuracy": 0.55,
                     "eval_accuracy_ci": [0.45, 0.65]}]
    events = list((tmp_path / "tensorboard").glob("events.*"))
    assert events and b"completions" in events[0].read_bytes()
    assert all("completions" not in json.loads(line) for line in
               (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_plot_draws_the_interval_band(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = [{"step": s, "acc": 0.1 * s, "acc_ci": [0.1 * s - 0.05, 0.1 * s + 0.05]}
            for s in range(5)]
    captured = {}
    real = plt.Axes.fill_between

    def spy(self, x, lo, hi, **kw):
        captured["band"] = (list(x), list(lo), list(hi))
        return real(self, x, lo, hi, **kw)

    plt.Axes.fill_between = spy
    try:
        reporting.plot_curves(rows, ["acc"], str(tmp_path / "p.png"))
    finally:
        plt.Axes.fill_between = real
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert captured["band"][0] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(captured["band"][2], [0.05, 0.15, 0.25, 0.35, 0.45])
