"""The explorer at scale: a SYNTHETIC 20,000-pair run, its size and its speed in Chromium.

    python benchmarks/bench_explorer.py [--pairs=20000] [--units=4096] [--out=/tmp/bench_explorer]

Synthetic data, for the size and load-time measurement only (the page says so in
a red banner): real documents of the embedded corpus cut into units by a BPE
trained on them, and for two "models" random sparse activations ([units,
pairs / sites] per site), model B being A's neurons permuted plus noise, so each
of the ``--pairs`` rows is a pair with a real Pearson r. The explorer is built
with ``build_explorer`` (the same code as a study) and opened from file:// in
headless Chromium (Debian's ``chromium`` and ``chromedriver``).

Prints one JSON object, measured in one run: build seconds; index.html bytes;
card shard bytes (total, per card); and in the browser (median of ``--repeats``
fresh loads) the time from navigation start to the first rendered list, then the
time for a search to narrow the list, a filter, a re-sort of all rows, a
scroll to the end, and opening a card (its shard loaded on demand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time

import numpy as np

from rosetta_jax import explorer
from rosetta_jax.data.corpus import load_corpus
from rosetta_jax.data.tokenizer import train_bpe


def synthetic_run(pairs: int, units: int, sites: int, seed: int = 0):
  """(rows, sources, unit texts) of a synthetic run with ``pairs`` Rosetta pairs."""
  rng = np.random.default_rng(seed)
  docs, total = [], 0
  pool = load_corpus("heldout")
  tok = train_bpe([d.text for d in pool[:200]], vocab_size=2000)
  for d in pool:
    docs.append(d)
    total += len(tok.encode(d.text).ids)
    if total >= units:
      break
  text = explorer.unit_text(docs, [tok])
  t = text.num_units
  per = pairs // sites
  src_a, src_b, rows = {}, {}, []
  for s in range(sites):
    site = f"layer_{s}/mlp"
    a = rng.lognormal(-1.0, 1.0, size=(t, per)).astype(np.float32)
    a *= rng.random((t, per), dtype=np.float32) < 0.2                   # sparse firing
    perm = rng.permutation(per)
    noise = rng.uniform(0.05, 3.0, size=per).astype(np.float32)
    b = np.empty_like(a)
    b[:, perm] = a + noise * a.std(0) * rng.standard_normal((t, per), dtype=np.float32)
    src_a[site], src_b[site] = a, b
    za = (a - a.mean(0)) / a.std(0)
    zb = (b[:, perm] - b[:, perm].mean(0)) / b[:, perm].std(0)
    r = (za * zb).mean(0)
    for n in range(per):
      rows.append(explorer.Row("rosetta", (
          explorer.Member("synthetic-a", site, n),
          explorer.Member("synthetic-b", site, int(perm[n]), r=float(r[n]))),
          r=float(r[n]), group="synthetic-a vs synthetic-b", rank=1))
  return rows, {"synthetic-a": src_a, "synthetic-b": src_b}, text


def chromium():
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  opts = webdriver.ChromeOptions()
  opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,900"):
    opts.add_argument(a)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


TIMED = """
const [kind, arg, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const count = () => document.getElementById('count').textContent;
const before = count(), t0 = performance.now();
if (kind === 'search' || kind === 'filter') {
  const e = document.getElementById(arg[0]); e.value = arg[1]; e.dispatchEvent(new Event('input'));
} else if (kind === 'sort') {
  document.querySelector('.lhead span[data-col="' + arg + '"]').click();
  return done(performance.now() - t0);
} else if (kind === 'scroll') {
  const b = document.getElementById('lbody'); b.scrollTop = b.scrollHeight;
  requestAnimationFrame(() => requestAnimationFrame(() => done([performance.now() - t0,
      document.querySelectorAll('#lbody .lrow').length])));
  return;
}
const poll = () => count() !== before ? done([performance.now() - t0, count()])
                                       : setTimeout(poll, 1);
poll();
"""


def measure(url: str, repeats: int, card: str) -> dict:
  d = chromium()
  try:
    loads, out = [], {}
    for _ in range(repeats):
      d.get(url)
      t0 = time.time()
      while d.execute_script("return window.RJ_READY_MS == null"):
        if time.time() - t0 > 60:
          raise TimeoutError("the explorer did not become ready in 60 s")
        time.sleep(0.01)
      loads.append(d.execute_script("return window.RJ_READY_MS"))
    out["load_ms_median"] = statistics.median(loads)
    out["load_ms_all"] = [round(x, 1) for x in loads]
    # The search includes the 60 ms debounce the page waits after a keystroke.
    ms, cnt = d.execute_async_script(TIMED, "search", ["q", "L1 N59"])
    out["search_ms"], out["search_count"] = round(ms, 1), cnt
    d.execute_async_script(TIMED, "search", ["q", ""])
    ms, cnt = d.execute_async_script(TIMED, "filter", ["f-rmin", "0.9"])
    out["filter_ms"], out["filter_count"] = round(ms, 1), cnt
    d.execute_async_script(TIMED, "filter", ["f-rmin", ""])
    out["sort_ms"] = round(d.execute_async_script(TIMED, "sort", "kurtosis"), 1)
    ms, rendered = d.execute_async_script(TIMED, "scroll", None)
    out["scroll_to_end_ms"], out["rows_in_dom"] = round(ms, 1), rendered
    d.get(url + f"#r={card}")
    t0 = time.time()
    while d.execute_script("return window.RJ_CARD_MS == null"):
      if time.time() - t0 > 60:
        raise TimeoutError("the card did not open in 60 s")
      time.sleep(0.01)
    out["card_open_ms"] = round(d.execute_script("return window.RJ_CARD_MS"), 1)
    out["heap_mb"] = round(d.execute_script(
        "return performance.memory ? performance.memory.usedJSHeapSize / 1048576 : -1"), 1)
    severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    out["console_errors"] = len(severe)
    return out
  finally:
    d.quit()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--pairs", type=int, default=20000)
  ap.add_argument("--units", type=int, default=4096)
  ap.add_argument("--sites", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="/tmp/bench_explorer")
  args = ap.parse_args()
  t0 = time.time()
  rows, sources, text = synthetic_run(args.pairs, args.units, args.sites)
  t_data = time.time() - t0
  summary = explorer.build_explorer(args.out, rows, sources, text, synthetic=True,
                                    title=f"SYNTHETIC explorer benchmark ({len(rows)} pairs)")
  cards = sorted(os.listdir(os.path.join(args.out, "cards")))
  result = {
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "synthetic": True, "pairs": len(rows), "units": text.num_units,
      "neurons_per_model": sum(x.shape[1] for x in sources["synthetic-a"].values()),
      "data_seconds": round(t_data, 1), "build_seconds": round(summary.seconds, 1),
      "index_html_bytes": summary.index_bytes, "card_shards": len(cards),
      "cards_bytes": summary.cards_bytes,
      "bytes_per_card": round(summary.cards_bytes / len(rows)),
      "shard_bytes_median": int(statistics.median(
          os.path.getsize(os.path.join(args.out, "cards", c)) for c in cards)),
  }
  result.update(measure("file://" + os.path.abspath(summary.index_html), args.repeats,
                        f"r{min(12345, len(rows) - 1)}"))
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
