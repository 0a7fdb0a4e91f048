"""Figures as inline SVG strings: line charts with bands, horizontal bars and left-to-right
trees, for the HTML report. Pure Python (no plotting library, no fonts to load): text is set in
the browser's monospace / sans-serif fonts and every figure sizes itself from its content.

Trees are laid out one leaf per row and one depth per column, a parent centred on its
children's rows, so labels never overlap however many nodes there are (`tree_layout`).
"""
from __future__ import annotations

import html
import math
from typing import Optional, Sequence

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
CHAR_W = 7.2          # px per character of 12px monospace text
ROW_H = 24            # px per tree row / bar row


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def clip(text: str, chars: int) -> str:
    """One line of at most `chars` characters, newlines shown as ⏎."""
    text = str(text).replace("\n", "⏎")
    return text if len(text) <= chars else text[:max(chars - 1, 0)] + "…"


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(label)}" '
            f'font-family="sans-serif" font-size="12">' + "".join(body) + "</svg>")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 or x == int(x) else f"{x:.3g}"


def line_chart(series: Sequence[dict], *, title: str = "", xlabel: str = "", ylabel: str = "",
               xlog: bool = False, ylim: Optional[tuple[float, float]] = None,
               width: int = 640, height: int = 360) -> str:
    """Lines of `series` (dicts with label, xs, ys and optionally lo, hi: a shaded band; a
    single point is drawn with an error bar), axes with ticks, and a legend on the right."""
    series = [s for s in series if len(s["xs"])]
    xs = [x for s in series for x in s["xs"]]
    ys = [y for s in series for k in ("ys", "lo", "hi") for y in s.get(k) or ()]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    fx = (lambda x: math.log10(max(x, 1e-9))) if xlog else float
    x0, x1 = min(map(fx, xs)), max(map(fx, xs))
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (x1 - x0) * 0.04
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if not ylim:
        y0, y1 = y0 - (y1 - y0) * 0.05, y1 + (y1 - y0) * 0.05
    legend_w = 14 + CHAR_W * max((len(str(s["label"])) for s in series), default=0)
    L, R, T, B = 56, 18 + legend_w, 28 if title else 12, 44
    pw, ph = width - L - R, height - T - B

    def px(x):
        return L + (fx(x) - x0) / (x1 - x0) * pw

    def py(y):
        return T + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>']
    if title:
        out.append(f'<text x="{L + pw / 2}" y="18" text-anchor="middle" '
                   f'font-weight="bold">{esc(title)}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                   f'stroke="#eee"/><text x="{L - 4}" y="{py(t) + 4:.1f}" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    xt = ([10 ** e for e in range(math.ceil(x0), math.floor(x1) + 1)] if xlog
          else _ticks(x0, x1))
    if xlog:   # add 2x and 5x ticks when a decade is wide
        xt = sorted(set(xt + [m * 10 ** e for e in range(math.floor(x0), math.ceil(x1) + 1)
                               for m in (2, 5) if x0 <= math.log10(m * 10 ** e) <= x1]))
    for t in xt:
        out.append(f'<line y1="{T}" y2="{T + ph}" x1="{px(t):.1f}" x2="{px(t):.1f}" '
                   f'stroke="#eee"/><text x="{px(t):.1f}" y="{T + ph + 15}" '
                   f'text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{height - 8}" text-anchor="middle">'
               f'{esc(xlabel)}{" (log scale)" if xlog else ""}</text>')
    out.append(f'<text transform="translate(14 {T + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{esc(ylabel)}</text>')
    for i, s in enumerate(series):
        color = s.get("color") or PALETTE[i % len(PALETTE)]
        pts = list(zip(s["xs"], s["ys"]))
        lo, hi = s.get("lo"), s.get("hi")
        dash = ' stroke-dasharray="4 3"' if s.get("dashed") else ""
        if lo and hi and len(pts) > 1:
            poly = ([(px(x), py(h)) for x, h in zip(s["xs"], hi)]
                    + [(px(x), py(lo_)) for x, lo_ in reversed(list(zip(s["xs"], lo)))])
            out.append(f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in poly)}" '
                       f'fill="{color}" fill-opacity="0.12" stroke="none"/>')
        elif lo and hi:
            x = px(s["xs"][0])
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(lo[0]):.1f}" '
                       f'y2="{py(hi[0]):.1f}" stroke="{color}" stroke-width="1.5"/>')
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="'
                       + " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts) + '"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
                f'<title>{esc(s["label"])}: x={_fmt(x)}, y={y:.3f}</title></circle>'
                for x, y in pts]
        ly = T + 10 + i * 18
        out.append(f'<line x1="{L + pw + 10}" x2="{L + pw + 22}" y1="{ly}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="3"{dash}/><text x="{L + pw + 26}" '
                   f'y="{ly + 4}">{esc(s["label"])}</text>')
    return _svg(width, height, out, title or ylabel)


def bar_rows(rows: Sequence[dict], *, title: str = "", value_max: float = 1.0,
             label_chars: int = 40, bar_w: int = 260) -> str:
    """Horizontal bars, one row each: dicts with label, value (in [0, value_max]), optional
    text (shown after the bar), color and mark (a bold red label, e.g. the weak step)."""
    label_w = CHAR_W * label_chars + 12
    text_chars = max((len(str(r.get("text", ""))) for r in rows), default=0)
    width = label_w + bar_w + 16 + CHAR_W * text_chars
    top = 26 if title else 6
    out = []
    if title:
        out.append(f'<text x="6" y="17" font-weight="bold">{esc(title)}</text>')
    for i, r in enumerate(rows):
        y = top + i * ROW_H
        w = max(0.0, min(1.0, r["value"] / value_max if value_max else 0.0)) * bar_w
        color = r.get("color") or PALETTE[0]
        weight = ' font-weight="bold" fill="#c00"' if r.get("mark") else ""
        out.append(f'<text x="6" y="{y + 16}" font-family="monospace"{weight}>'
                   f'{esc(clip(r["label"], label_chars))}<title>{esc(r["label"])}</title>'
                   f'</text>')
        out.append(f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="{ROW_H - 8}" '
                   f'fill="#f2f2f2"/><rect x="{label_w}" y="{y + 4}" width="{w:.1f}" '
                   f'height="{ROW_H - 8}" fill="{color}"/>')
        if r.get("text"):
            out.append(f'<text x="{label_w + bar_w + 8}" y="{y + 16}"{weight}>'
                       f'{esc(r["text"])}</text>')
    return _svg(width, top + len(rows) * ROW_H + 6, out, title or "bars")


def tree_layout(parents: Sequence[Optional[int]]) -> tuple[list[int], list[float]]:
    """(depth, row) of every node of a tree given as parent indices (None: the root; children
    in index order): one row per leaf, a parent centred between its first and last child.
    Nodes of one depth are at least one row apart."""
    children: dict[Optional[int], list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    depth, row = [0] * len(parents), [0.0] * len(parents)
    next_row = [0]

    def place(i, d):   # iterative would be longer; trees here are shallow (<= max_steps)
        depth[i] = d
        kids = children.get(i, [])
        if not kids:
            row[i] = next_row[0]
            next_row[0] += 1
            return
        for k in kids:
            place(k, d + 1)
        row[i] = (row[kids[0]] + row[kids[-1]]) / 2
    for r in children.get(None, []):
        place(r, 0)
    return depth, row


def tree_boxes(parents: Sequence[Optional[int]], box_w: float, col_gap: float = 36,
               row_h: float = ROW_H * 2, margin: float = 8) -> list[tuple[float, float, float,
                                                                         float]]:
    """(x, y, w, h) of every node's box in the `tree_layout`."""
    depth, row = tree_layout(parents)
    return [(margin + d * (box_w + col_gap), margin + r * row_h, box_w, row_h - 8)
            for d, r in zip(depth, row)]


def tree(nodes: Sequence[dict], *, text_chars: int = 22, title: str = "") -> str:
    """A left-to-right tree: nodes are dicts with parent (index or None), text (the step, one
    line), info (a second line: scores, visits), and optionally chosen (highlighted with its
    edge), dim (greyed: pruned) and tip (a tooltip, e.g. the full step)."""
    parents = [n["parent"] for n in nodes]
    chars = max(text_chars, max((len(str(n.get("info", ""))) for n in nodes), default=0))
    box_w = CHAR_W * chars + 10
    top = 24 if title else 0
    boxes = [(x, y + top, w, h) for x, y, w, h in tree_boxes(parents, box_w)]
    width = max(x + w for x, _, w, _ in boxes) + 8
    height = max(y + h for _, y, _, h in boxes) + 12
    out = [f'<text x="8" y="16" font-weight="bold">{esc(title)}</text>'] if title else []
    for i, n in enumerate(nodes):   # edges first, under the boxes
        if n["parent"] is not None:
            px_, py_, pw, ph = boxes[n["parent"]]
            x, y, _, h = boxes[i]
            a, b = (px_ + pw, py_ + ph / 2), (x, y + h / 2)
            mid = (a[0] + b[0]) / 2
            style = ('stroke="#d62728" stroke-width="2.5"' if n.get("chosen")
                     else 'stroke="#bbb" stroke-width="1"')
            out.append(f'<path d="M{a[0]:.1f},{a[1]:.1f} C{mid:.1f},{a[1]:.1f} {mid:.1f},'
                       f'{b[1]:.1f} {b[0]:.1f},{b[1]:.1f}" fill="none" {style}/>')
    for (x, y, w, h), n in zip(boxes, nodes):
        fill = "#fde0dc" if n.get("chosen") else ("#f4f4f4" if n.get("dim") else "#e8f0fb")
        stroke = "#d62728" if n.get("chosen") else "#999"
        tip = f'<title>{esc(n.get("tip", n.get("text", "")))}</title>'
        out.append(f'<g class="node"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                   f'height="{h:.1f}" rx="4" fill="{fill}" stroke="{stroke}"/>{tip}'
                   f'<text x="{x + 5:.1f}" y="{y + 15:.1f}" font-family="monospace" '
                   f'fill="{"#777" if n.get("dim") else "#000"}">'
                   f'{esc(clip(n.get("text", ""), chars))}</text>'
                   f'<text x="{x + 5:.1f}" y="{y + 31:.1f}" font-family="monospace" '
                   f'font-size="11" fill="#555">{esc(clip(n.get("info", ""), chars))}</text>'
                   f'</g>')
    return _svg(width, height, out, title or "tree")


def grouped_bars(groups: Sequence[dict], series: Sequence[str], *, title: str = "",
                 height: int = 300, group_w: int = 90) -> str:
    """Vertical bars, a group per category: dicts with label, values (one per `series`, each
    scaled to its series' maximum so that counts and scores share the plot), texts (the number
    printed above each bar) and optional note (a line under the label, e.g. "gold")."""
    n = len(series)
    maxima = [max((g["values"][j] for g in groups), default=1.0) or 1.0 for j in range(n)]
    L, T, B = 10, 30 if title else 10, 56
    legend = 20 * n
    width = L + group_w * max(len(groups), 1) + 160
    ph = height - T - B - legend
    out = []
    if title:
        out.append(f'<text x="{L}" y="18" font-weight="bold">{esc(title)}</text>')
    bw = (group_w - 20) / n
    for gi, g in enumerate(groups):
        gx = L + gi * group_w + 10
        for j in range(n):
            v = g["values"][j] / maxima[j]
            h = max(v * ph, 0)
            x, y = gx + j * bw, T + ph - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                       f'fill="{PALETTE[j]}"/><text x="{x + bw / 2:.1f}" y="{y - 3:.1f}" '
                       f'text-anchor="middle" font-size="10">{esc(g["texts"][j])}</text>')
        out.append(f'<text x="{gx + (group_w - 20) / 2:.1f}" y="{T + ph + 16}" '
                   f'text-anchor="middle" font-family="monospace">'
                   f'{esc(clip(g["label"], int(group_w / CHAR_W)))}</text>')
        if g.get("note"):
            out.append(f'<text x="{gx + (group_w - 20) / 2:.1f}" y="{T + ph + 31}" '
                       f'text-anchor="middle" font-size="10" fill="#c00">{esc(g["note"])}</text>')
    out.append(f'<line x1="{L}" x2="{L + group_w * len(groups)}" y1="{T + ph}" y2="{T + ph}" '
               f'stroke="#333"/>')
    for j, s in enumerate(series):
        y = height - legend + j * 20 - 4
        out.append(f'<rect x="{L}" y="{y - 10}" width="12" height="12" fill="{PALETTE[j]}"/>'
                   f'<text x="{L + 18}" y="{y}">{esc(s)}</text>')
    return _svg(width, height, out, title or "bars")
