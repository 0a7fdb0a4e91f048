"""Run outputs people look at: metrics as JSONL and TensorBoard events, PNG plots, progress.

Used by the loops of floor 5 (train, experiments); nothing below them writes files.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping, Optional

import numpy as np


def _plain(value):
    if isinstance(value, (list, tuple)):      # e.g. an interval [lo, hi]
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
        value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricWriter:
    """Appends {"step": s, "stage": ..., **scalars} lines to `<workdir>/metrics.jsonl` and, when
    tensorboardX is installed, writes TensorBoard events to `<workdir>/tensorboard/`.

    Only the main process should create one (see `r1jax.sharding.is_main_process`).
    """

    def __init__(self, workdir: str, tensorboard: bool = True):
        import jax
        self._active = jax.process_index() == 0  # metrics are written once, by process 0
        if not self._active:
            return
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # optional: JSONL is the record of truth
                self._tb = None

    def write(self, step: int, scalars: Mapping[str, float], stage: str = "") -> None:
        if not self._active:
            return
        row = {"step": int(step), "stage": stage}
        row.update({k: _plain(v) for k, v in scalars.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in row.items():
                if isinstance(value, (int, float)) and name != "step":
                    self._tb.add_scalar(f"{stage}/{name}" if stage else name, value, step)

    def write_text(self, step: int, name: str, text: str, stage: str = "") -> None:
        """Text for TensorBoard's text tab (e.g. sampled completions); not in the JSONL."""
        if self._active and self._tb is not None:
            self._tb.add_text(f"{stage}/{name}" if stage else name, text, step)

    def close(self) -> None:
        if not self._active:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str, stage: Optional[str] = None, since_step: int = -1) -> list[dict]:
    """Rows of a metrics.jsonl, optionally of one stage. A resumed run appends rows for steps
    it repeats; the last row of each (stage, step, keys) wins."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if (stage is None or row.get("stage") == stage) and row["step"] > since_step:
                rows[(row.get("stage"), row["step"], tuple(sorted(row)))] = row
    return sorted(rows.values(), key=lambda r: r["step"])


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, value, default=None) -> None:
    """Writes JSON atomically (a stopped run never leaves half a record); `default` as in
    `json.dump`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=default)
    os.replace(path + ".tmp", path)


def plot_curves(rows: Iterable[Mapping], keys: Iterable[str], path: str, title: str = "") -> None:
    """One PNG with a panel per metric key against step (keys absent from every row skipped);
    where rows carry `<key>_ci` = [lo, hi] (e.g. held-out accuracy), the interval is a band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if not keys:
        return
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None)
        band = [(r["step"], *r[f"{key}_ci"]) for r in rows
                if isinstance(r.get(key), (int, float)) and isinstance(r.get(f"{key}_ci"), list)
                and len(r[f"{key}_ci"]) == 2]
        if band:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, alpha=0.25, label="95% interval")
            ax.legend(fontsize=7)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
