"""The visual report: SVG figures (tree layout without overlaps up to 64 nodes and beyond),
the recorded search trees, the readers of the R1 / STaR / distillation results, and the whole
report built from the tiny R1-Zero run and a smoke-size test-time scaling run, opened in a
headless Chromium (no console errors, every SVG rendered, every section present, a
screenshot next to the report)."""
import base64
import json
import math
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import jax
import pytest

from conftest import load_config
from r1jax import search, svg
from r1jax.recipes import report
from r1jax.search import Step

# ----------------------------------------------------------------------------- SVG figures


def _random_parents(n: int, seed: int, max_children: int = 4) -> list:
    rng = random.Random(seed)
    parents, kids = [None], [0]
    for i in range(1, n):
        open_ = [j for j in range(i) if kids[j] < max_children]
        p = rng.choice(open_)
        parents.append(p)
        kids[p] += 1
        kids.append(0)
    return parents


@pytest.mark.parametrize("n,seed", [(64, 0), (64, 1), (64, 2), (200, 3)])
def test_tree_boxes_never_overlap(n, seed):
    parents = _random_parents(n, seed)
    boxes = svg.tree_boxes(parents, box_w=150)
    for i in range(n):
        for j in range(i + 1, n):
            (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes[i], boxes[j]
            apart = x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
            assert apart, (i, j, boxes[i], boxes[j])
    # Children sit one column right of their parent; the parent is within its children's rows.
    depth, row = svg.tree_layout(parents)
    for i, p in enumerate(parents):
        if p is not None:
            assert depth[i] == depth[p] + 1
    for p in range(n):
        kids = [i for i, q in enumerate(parents) if q == p]
        if kids:
            assert min(row[k] for k in kids) <= row[p] <= max(row[k] for k in kids)


def test_tree_svg_is_valid_and_escapes_text():
    parents = _random_parents(64, 5)
    nodes = [{"parent": p, "text": f"<step {i}> & 2+2=4\n", "info": f"PRM 0.{i:02d}",
              "chosen": i in (0, 1), "dim": i % 3 == 0} for i, p in enumerate(parents)]
    text = svg.tree(nodes, title="a <tree>")
    root = ET.fromstring(text)   # well-formed XML: labels escaped
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0
    assert text.count('class="node"') == 64 and "&lt;step 7&gt; &amp; 2+2=4⏎" in text
    assert text.count('stroke="#d62728" stroke-width="2.5"') == 1   # the chosen edge 0 -> 1


def test_line_chart_draws_bands_points_and_legend():
    series = [{"label": "a<b", "xs": [1, 10, 100], "ys": [0.1, 0.5, 0.9],
               "lo": [0.0, 0.4, 0.8], "hi": [0.2, 0.6, 1.0]},
              {"label": "one point", "xs": [5], "ys": [0.3], "lo": [0.2], "hi": [0.4]}]
    text = svg.line_chart(series, xlabel="tokens", ylabel="accuracy", xlog=True, ylim=(0, 1))
    root = ET.fromstring(text)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polygon")) == 1          # the band of the 3-point series
    assert len(root.findall(f"{ns}circle")) == 4
    assert "a&lt;b" in text and "(log scale)" in text
    bars = svg.bar_rows([{"label": "x", "value": 0.5, "text": "0.5"},
                         {"label": "y", "value": 2.0, "mark": True}], value_max=1.0)
    widths = [float(r.get("width")) for r in ET.fromstring(bars).findall(f"{ns}rect")]
    assert widths[1] == pytest.approx(widths[0] / 2) and widths[3] == widths[2]  # clipped at 1


# ----------------------------------------------------------------------------- recorded trees

class _Proposer:
    """Next steps "a\n", "b\n", "a\n", ... (the third step is final)."""

    def propose(self, prefixes, n, key):
        return [[Step((len(p), 10 + j % 2), "ab"[j % 2] + "\n", len(p) >= 5) for j in range(n)]
                for p in prefixes]


class _Scorer:
    def score(self, questions, solutions):
        return ([[0.9 if s.text == "a\n" else 0.2 for s in sol] for sol in solutions],
                [len(q) + sum(s.num_tokens for s in sol) for q, sol in zip(questions, solutions)])


def test_beam_tree_records_what_beam_search_did():
    proposer, scorer = report.RecordingProposer(_Proposer()), report.RecordingScorer(_Scorer())
    res = search.beam_search(proposer, scorer, [(7,)], jax.random.key(0), beam_width=2,
                             expansions=2, max_steps=3, aggregation="min")[0]
    nodes = report.beam_tree(proposer.calls, scorer.scores, (7,), res.steps, "min")
    # Root; 4 first steps merging into a/b (2 each); each kept beam's 2 children merge in 2.
    assert nodes[0]["parent"] is None and all(n["parent"] is not None for n in nodes[1:])
    first = [n for n in nodes if n["parent"] == 0]
    assert [(n["text"], n["count"]) for n in first] == [("a\n", 2), ("b\n", 2)]
    chosen = [n["text"] for n in nodes[1:] if n["chosen"]]
    assert chosen == [s.text for s in res.steps] == ["a\n", "a\n", "a\n"]
    for n in nodes[1:]:
        assert n["aggregate"] == min(scorer.scores[n["ids"]])
        assert n["expanded"] == any(p == n["ids"] for p, _ in proposer.calls)
    assert ET.fromstring(svg.tree(nodes))


def test_mcts_tree_marks_the_chosen_path():
    res, roots = search.mcts(_Proposer(), _Scorer(), [(7,)], jax.random.key(0),
                             num_simulations=6, expansions=2, max_steps=3, aggregation="min",
                             return_trees=True)
    nodes = report.mcts_tree(roots[0], res[0].steps)
    assert nodes[0]["visits"] == 6 and nodes[0]["chosen"]
    assert sum(n["chosen"] for n in nodes) == 1 + len(
        [n for n in nodes if n["chosen"] and n["parent"] is not None])
    assert all(n["text"] != "b\n" for n in nodes if n["chosen"])   # b scores 0.2, a 0.9


# ----------------------------------------------------------------------------- section 8

def test_pipeline_sections_read_results_or_say_not_run(tmp_path):
    body, data = report.pipeline_section("r1", None)
    assert "Not run" in body and "<svg" not in body and data == {"run": False}
    body, data = report.pipeline_section("star", report.Source(str(tmp_path)))
    assert "Not run" in body and "no results.json" in body
    (tmp_path / "results.json").write_text(json.dumps({"iterations": [
        {"iteration": 0, "accuracy": 0.25, "kept": 40},
        {"iteration": 1, "accuracy": 0.5, "kept": 60}]}))
    body, data = report.pipeline_section("star", report.Source(str(tmp_path)))
    assert data == {"run": True, "records": 2, "accuracy_key": "accuracy"}
    assert "0.250" in body and "0.500" in body and "<td>60</td>" in body and "<svg" in body
    (tmp_path / "results.json").write_text(json.dumps({"methods": {
        "sft": {"student_accuracy": 0.4}, "kd": {"student_accuracy": 0.6}}}))
    body, data = report.pipeline_section("distill", report.Source(str(tmp_path)))
    assert data["records"] == 2 and "kd 0.600" in body
    with pytest.raises(ValueError, match="stages"):
        report.pipeline_section("r1", report.Source(str(tmp_path)))
    # R1's stages: numbered and named, a skipped one without metrics, intervals as lists.
    (tmp_path / "results.json").write_text(json.dumps({"stages": [
        {"stage": 1, "name": "cold_start", "accuracy": 0.3, "accuracy_ci": [0.2, 0.4]},
        {"stage": 2, "name": "reasoning_rl", "skipped": True},
        {"stage": 3, "name": "rejection", "kept": 120, "sampled": 400}]}))
    body, data = report.pipeline_section("r1", report.Source(str(tmp_path)))
    assert data == {"run": True, "records": 3, "accuracy_key": "accuracy"}
    assert "cold_start 0.300" in body and "reasoning_rl 0" not in body
    assert "<td>reasoning_rl</td>" in body and "<td>400</td>" in body and "[0.2" not in body


# ----------------------------------------------------------------------------- in a browser

class _DevTools:
    """A minimal Chrome DevTools Protocol client over a stdlib WebSocket (RFC 6455)."""

    def __init__(self, ws_url: str):
        host, rest = ws_url[len("ws://"):].split("/", 1)
        h, p = host.split(":")
        self.sock = socket.create_connection((h, int(p)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id, self.events = 0, []

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools socket closed")
            buf += chunk
        return buf

    def _recv(self) -> dict:
        data = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            data += self._recv_exact(n)
            if b0 & 0x80:
                return json.loads(data)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while True:
            msg = self._recv()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60):
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(self._recv())
        raise TimeoutError(method)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise RuntimeError("no chromium on PATH: `.ci/run` installs Debian's chromium when run as "
                       "root; elsewhere `apt-get install -y chromium` before running this test")


CHECKS = """(() => {
  const figs = [...document.querySelectorAll('svg')].map(e => {
    const r = e.getBoundingClientRect(); return [r.width, r.height]; });
  const imgs = [...document.querySelectorAll('img')].map(e =>
    [e.naturalWidth, e.naturalHeight, e.complete]);
  return JSON.stringify({
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    svgs: figs, imgs: imgs,
    captions: [...document.querySelectorAll('figcaption')].map(c => c.textContent.length),
    notrun: [...document.querySelectorAll('.notrun')].map(e => e.textContent),
    scripts: document.querySelectorAll('script').length,
    external: [...document.querySelectorAll('[src],link[href]')].map(e =>
      e.getAttribute('src') || e.getAttribute('href')),
    height: document.documentElement.scrollHeight});
})()"""


def open_in_browser(index_html: str, screenshot: str, tmp_path) -> tuple[dict, list]:
    """Opens the page in headless Chromium; returns (CHECKS' result, console / log errors) and
    writes a full-page PNG screenshot."""
    proc = subprocess.Popen(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        end = time.time() + 60
        while port is None and time.time() < end:
            line = proc.stderr.readline()
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].split(":")[1])
        assert port, "chromium did not start its DevTools server"
        # Keep reading its log so that a full pipe never blocks it.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        cdp = _DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            cdp.call(f"{domain}.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1200, height=900,
                 deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url="file://" + os.path.abspath(index_html))
        cdp.wait_for("Page.loadEventFired")
        checks = json.loads(cdp.call("Runtime.evaluate", expression=CHECKS,
                                     returnByValue=True)["result"]["value"])
        shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": 1200, "height": checks["height"],
                              "scale": 1})
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        errors = [e for e in cdp.events if
                  e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled"
                      and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded"
                      and e["params"]["entry"]["level"] == "error")]
        return checks, errors
    finally:
        proc.kill()
        proc.wait()


def _smoke_tts_config(base_workdir: str):
    """The test-time scaling smoke config on the R1-Zero tiny base (pretraining unused),
    with solutions long enough to reach an answer."""
    from test_test_time_scaling import _smoke_config
    c = _smoke_config()
    c.unlock()
    c.base_workdir = base_workdir
    c.tts.max_new_tokens = 48
    c.tts.search_budgets = (2,)
    c.lock()
    return c


@pytest.mark.slow
def test_report_in_a_browser(tiny_r1_zero, tmp_path):
    from r1jax.recipes import test_time_scaling
    t0 = time.time()
    tts_dir = str(tmp_path / "tts")
    tts_cfg = _smoke_tts_config(str(tiny_r1_zero))
    test_time_scaling.run(tts_cfg, tts_dir, show_progress=False)
    t1 = time.time()
    out = tmp_path / "report"
    opts = report.Options(problems=2, samples=4, beam_width=2, beam_expansions=2,
                          tree_max_steps=3, mcts_simulations=4, grpo_prompts=4,
                          decision_problems=8)
    built = report.build(str(out), {
        "tts": report.Source(tts_dir, tts_cfg),
        "r1_zero": report.Source(str(tiny_r1_zero), load_config("r1_zero", "tiny")),
        "r1": None, "star": report.Source(str(tmp_path / "no_star_run"))}, opts)
    t2 = time.time()
    checks, errors = open_in_browser(str(out / "index.html"), str(out / "screenshot.png"),
                                     tmp_path)
    print(f"tts smoke {t1 - t0:.0f} s, report {t2 - t1:.0f} s, browser {time.time() - t2:.0f} s")
    assert errors == []
    assert checks["headings"] == list(report.SECTIONS.values())
    # Figures 1-7 (1 each, 2 trees, 2 next-token panels, 4 R1-Zero panels) and no other.
    assert len(checks["svgs"]) == 1 + 1 + 2 + 1 + 1 + 2 + 4 and checks["imgs"] == []
    assert all(w > 50 and h > 50 for w, h in checks["svgs"]), checks["svgs"]
    assert len(checks["captions"]) == 8 and min(checks["captions"]) > 150
    assert len(checks["notrun"]) == 3 and checks["scripts"] == 0 and checks["external"] == []
    shot = (out / "screenshot.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000
    # The figures' numbers are the runs': figure 1 is results.json, figure 5 a real group.
    results = json.loads((tmp_path / "tts" / "results.json").read_text())
    f = built["figures"]
    assert f["tts"]["majority"][1]["accuracy"] == results["curves"]["majority"][1]["accuracy"]
    g = f["grpo_group"]
    assert len(g["rewards"]) == len(g["advantages"]) == 8
    mean = sum(g["rewards"]) / 8
    sd = math.sqrt(sum((r - mean) ** 2 for r in g["rewards"]) / 7)
    assert g["advantages"] == pytest.approx([(r - mean) / (sd + 1e-6) for r in g["rewards"]],
                                            abs=1e-4)
    assert f["trees"]["mcts"]["root_visits"] == 4 and f["trees"]["beam"]["nodes"] >= 3
    assert 0 <= f["next_token"]["p_guess_after"] <= 1
    assert json.loads((out / "report.json").read_text())["sections"] == checks["headings"]


def test_the_browser_check_sees_errors_and_sizes(tmp_path):
    """The checker itself: a console error, an uncaught exception, a broken image and an empty
    SVG are all seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><h2>A</h2>'
                    '<svg width="0" height="0"></svg><svg width="30" height="20"></svg>'
                    '<img src="missing.png"><script>console.error("boom");'
                    'undefined_function();</script></body></html>')
    checks, errors = open_in_browser(str(page), str(tmp_path / "bad.png"), tmp_path)
    assert checks["headings"] == ["A"] and checks["svgs"] == [[0, 0], [30, 20]]
    assert checks["imgs"] == [[0, 0, True]] and checks["scripts"] == 1
    kinds = {e["method"] for e in errors}
    assert "Runtime.consoleAPICalled" in kinds and "Runtime.exceptionThrown" in kinds
    assert (tmp_path / "bad.png").read_bytes()[:4] == b"\x89PNG"


def test_entry_point_writes_a_report_of_not_run_sections(tmp_path):
    """experiments/report.py with workdirs that hold no runs: every section says so."""
    import sys
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(repo, "experiments", "report.py"),
                           f"--workdir={out}", f"--r1_zero_workdir={empty}",
                           f"--tts_workdir={empty}", f"--star_workdir={empty}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (out / "index.html").read_text()
    assert page.count('class="notrun"') == 3 + 4 + 3 and "<svg" not in page
    assert all(f"<h2>{h}</h2>" in page for h in report.SECTIONS.values())
    assert json.loads((out / "report.json").read_text())["sources"]["star"] == str(empty)
