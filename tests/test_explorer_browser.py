"""The explorer page in a real headless Chromium, opened from file:// (no server).

Drives Debian's ``chromium`` through its ``chromedriver`` (``.ci/run`` installs both
where missing) over the micro run's explorer: no console errors, nothing loaded
from the network, search narrows the list, filters apply, a click opens a card
with both models' contexts, and deep links open the right card. Expected counts
are computed here from the rows, not read from the page.
"""

import os
import re
import shutil

import pytest

from explorer_micro import shared_micro_run
from rosetta_jax.explorer import cards as cards_lib

from selenium import webdriver  # the test extra installs selenium
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def chromium_driver():
  binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)
  driver = shutil.which("chromedriver")
  if binary is None or driver is None:
    pytest.fail("the browser test needs chromium and chromedriver on PATH "
                "(apt-get install -y chromium chromium-driver; .ci/run does this)")
  opts = webdriver.ChromeOptions()
  opts.binary_location = binary
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,900", "--allow-file-access-from-files"):
    opts.add_argument(a)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return shared_micro_run(tmp_path_factory)


@pytest.fixture(scope="module")
def browser():
  d = chromium_driver()
  d.logs = []
  yield d
  d.quit()


def layer(site):
  return int(re.match(r"layer_(\d+)/", site).group(1))


def load(d, url):
  d.get(url)
  WebDriverWait(d, 20).until(lambda x: x.execute_script("return window.RJ_READY_MS != null"))
  d.logs += d.get_log("browser")


def count(d):
  return d.find_element(By.ID, "count").text


def wait_count(d, n, total):
  want = f"{n} of {total} rows"
  WebDriverWait(d, 10).until(lambda x: count(x) == want, message=f"count {count(d)!r} != {want!r}")


def wait_card(d, row_id):
  WebDriverWait(d, 10).until(lambda x: x.execute_script(
      "const c = document.querySelector('#card .card'); return c && c.dataset.id") == row_id)
  return d.find_element(By.CSS_SELECTOR, "#card .card")


def visible_ids(d):
  return {e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#lbody .lrow")}


def test_explorer_in_headless_chromium(run, browser):
  d, rows, n = browser, run.rows, len(run.rows)
  url = "file://" + os.path.abspath(run.summary.index_html)
  load(d, url)
  wait_count(d, n, n)
  resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
  assert all(r.startswith(("file:", "data:")) for r in resources), resources

  # Search by layer and neuron narrows the list to the rows holding that neuron.
  target = rows[5].members[0]
  q = f"L{layer(target.site)} N{target.neuron}"
  want = [f"r{i}" for i, r in enumerate(rows)
          if any(layer(m.site) == layer(target.site) and m.neuron == target.neuron
                 for m in r.members)]
  assert 0 < len(want) < n
  box = d.find_element(By.ID, "q")
  box.send_keys(q)
  wait_count(d, len(want), n)
  assert visible_ids(d) == set(want)
  # By model, and by a text fragment of a neuron's top units.
  box.clear()
  box.send_keys("model:micro-b")
  wait_count(d, sum(any(m.model == "micro-b" for m in r.members) for r in rows), n)
  ix_tok = d.execute_script("return RJ.index.rows.tok")

  def haystack(i, r):  # what the page searches: members, top units, group
    return (" ".join(f"{m.model} {m.site}" for m in r.members) + f" {ix_tok[i]} {r.group}").lower()
  frags = [t.strip().lower() for tok in ix_tok for t in tok.split(" \u00b7 ")
           if len(t.strip()) >= 3]
  frag, hits = next((f, h) for f in frags
                    if 0 < (h := sum(f in haystack(i, r) for i, r in enumerate(rows))) < n)
  box.clear()
  box.send_keys(f'"{frag}"')
  wait_count(d, hits, n)
  box.clear()
  box.send_keys(" ")
  wait_count(d, n, n)

  # Filters: minimum r, then one kind off.
  r_min = 0.999
  d.find_element(By.ID, "f-rmin").send_keys(str(r_min))
  strong = [r for r in rows if r.r is not None and cards_lib.rounded(r.r, 4) >= r_min]
  assert 0 < len(strong) < n
  wait_count(d, len(strong), n)
  d.execute_script("const e = document.getElementById('f-rmin'); e.value = '';"
                   "e.dispatchEvent(new Event('input'));")
  wait_count(d, n, n)
  d.find_element(By.CSS_SELECTOR, ".f-kind[value=null]").click()
  wait_count(d, sum(r.kind != "null" for r in rows), n)
  # "Rosetta or control": the null off, then only the controls.
  kinds = {r.kind for r in rows}
  assert {"rosetta", "control"} <= kinds
  wait_count(d, sum(r.kind in ("rosetta", "control", "anchor") for r in rows), n)
  for k in kinds - {"control", "null"}:
    d.find_element(By.CSS_SELECTOR, f".f-kind[value={k}]").click()
  ctl = [f"r{i}" for i, r in enumerate(rows) if r.kind == "control"]
  wait_count(d, len(ctl), n)
  assert visible_ids(d) == set(ctl)
  for k in kinds - {"control"}:
    d.find_element(By.CSS_SELECTOR, f".f-kind[value={k}]").click()
  wait_count(d, n, n)

  # A click opens the row's card with both models' contexts side by side.
  first = d.find_element(By.CSS_SELECTOR, "#lbody .lrow")
  rid = first.get_attribute("data-id")
  row = rows[int(rid[1:])]
  first.click()
  card = wait_card(d, rid)
  members = card.find_elements(By.CSS_SELECTOR, ".member")
  assert [m.get_attribute("data-model") for m in members] == [m.model for m in row.members]
  assert row.kind == "rosetta" and len(members) == 2
  for m, el in zip(row.members, members):
    assert f"N{m.neuron} ({m.site})" in el.find_element(By.TAG_NAME, "h3").text
    ctxs = el.find_elements(By.CSS_SELECTOR, "ol.top li.ctx")
    assert len(ctxs) == 10
    # The marked unit of the first context is the neuron's top unit.
    x = run.stores[m.model].site(m.site).read(0, run.units.num_units)[:, m.neuron]
    top_unit = int(max(range(len(x)), key=lambda u: (x[u], -u)))
    centre = ctxs[0].find_element(By.CSS_SELECTOR, ".tk.centre").get_attribute("textContent")
    assert centre == run.units.unit_strings([top_unit])[0].replace("\n", "\u21b5")
    assert el.find_elements(By.CSS_SELECTOR, "svg.hist rect")
    assert el.find_elements(By.CSS_SELECTOR, ".vocab code")
  # Colour by the partner: re-rendered, still both columns.
  Select(card.find_element(By.CSS_SELECTOR, "select.colour-by")).select_by_value("1")
  WebDriverWait(d, 5).until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#card .member")) == 2
                            and "coloured by" in x.find_element(By.ID, "card").text)

  # Deep links: a null pair by row id, a control by neuron, on fresh page loads.
  null_i = next(i for i, r in enumerate(rows) if r.kind == "null")
  load(d, url + f"#r=r{null_i}")
  card = wait_card(d, f"r{null_i}")
  assert card.get_attribute("data-kind") == "null"
  assert len(card.find_elements(By.CSS_SELECTOR, ".member")) == 2
  ctl_i = next(i for i, r in enumerate(rows) if r.kind == "control")
  m = rows[ctl_i].members[0]
  first_with = next(i for i, r in enumerate(rows) if m.key in [x.key for x in r.members])
  load(d, url + f"#n={m.model}|{m.site}|{m.neuron}")
  card = wait_card(d, f"r{first_with}")
  assert any(f"N{m.neuron} ({m.site})" in h.text for h in card.find_elements(By.TAG_NAME, "h3"))

  d.logs += d.get_log("browser")
  errors = [e for e in d.logs if e["level"] == "SEVERE"]
  assert not errors, errors


def test_notebook_card_renders_inline(run, browser, tmp_path):
  """``Card._repr_html_`` (what Jupyter shows) draws the same card with the page's
  script, from a fragment embedded in another page."""
  from rosetta_jax import explorer
  ex = explorer.explore(os.path.dirname(run.out_dir), open_browser=False)
  assert f"{len(run.rosetta)} rosetta" in repr(ex) and "open the explorer" in ex._repr_html_()
  card = ex.card("r1")
  page = tmp_path / "notebook.html"
  page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' "
                  f"href='data:,'></head><body><p>cell output:</p>{card._repr_html_()}"
                  "</body></html>", encoding="utf-8")
  browser.get(f"file://{page}")
  WebDriverWait(browser, 10).until(
      lambda x: x.find_elements(By.CSS_SELECTOR, ".rj .card[data-id=r1] .member"))
  members = browser.find_elements(By.CSS_SELECTOR, ".rj .card .member")
  assert [m.get_attribute("data-model") for m in members] == [m.model for m in run.rows[1].members]
  assert len(members[1].find_elements(By.CSS_SELECTOR, "ol.top li.ctx")) == 10
  assert not browser.find_elements(By.CSS_SELECTOR, ".card .tools a[href^='#r=r1']")  # no page link
  errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors
