"""Benchmark: the neuron pages of a study, their build time and size against the budget (not a test).

Budget (issue 27) for the default study's pages (SmolLM2-135M-Instruct, a few hundred neurons on the
index): at most ``SIZE_BUDGET_MB`` on disk and ``TIME_BUDGET_S`` to build on the CPU. The build copies
nothing of the study; it writes into a temporary folder, so the study is left as it was.
The index is also drawn with ``--index-rows`` synthetic rows in chromium (a few thousand must stay fast).
Run: .venv/bin/python bench/bench_pages.py STUDY_DIR [STUDY_DIR ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from interp.pages import build_pages

SIZE_BUDGET_MB = 20.0
TIME_BUDGET_S = 60.0


def index_speed(n_rows: int) -> tuple[float, float]:
    """Milliseconds for chromium to draw an index of ``n_rows`` synthetic neurons, and to redraw it filtered
    to one layer (the index must stay fast with a few thousand rows)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from interp.pages.render import index_html

    rng = np.random.default_rng(0)
    rows = [{"layer": int(i % 30), "index": int(i), "rank": i + 1, "class": ["amplified", "suppressed"][i % 2],
             "roles": ["flagged"], "strength": float(rng.normal()), "screen": float(rng.normal()), "exact": None,
             "change_std": float(rng.normal())} for i in range(n_rows)]
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.html"
            path.write_text(index_html("bench", rows))
            driver.get(path.as_uri())
            timing = "const t = performance.now(); draw(); return performance.now() - t;"
            full = min(driver.execute_script(timing) for _ in range(5))
            driver.execute_script("document.getElementById('layer').value = '3';")
            filtered = min(driver.execute_script(timing) for _ in range(5))
    finally:
        driver.quit()
    return full, filtered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="finished study directories")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--index-rows", type=int, default=3000, help="rows of the synthetic index drawn in chromium "
                        "(0: skip; needs chromium, chromedriver and selenium)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'study':40s} {'pages':>6s} {'MB':>7s} {'KB/page':>8s} {'seconds':>8s}  budget "
          f"(<= {SIZE_BUDGET_MB:.0f} MB, <= {TIME_BUDGET_S:.0f} s)")
    for study in args.studies:
        with tempfile.TemporaryDirectory() as tmp:
            result = build_pages(study, Path(tmp) / "pages", link_report=False)
        mb = result.bytes / 1e6
        ok = mb <= SIZE_BUDGET_MB and result.seconds <= TIME_BUDGET_S
        print(f"{str(study)[-40:]:40s} {result.n_pages:6d} {mb:7.2f} {1e3 * mb / max(result.n_pages, 1):8.1f} "
              f"{result.seconds:8.1f}  {'within' if ok else 'OVER'}")
    if args.index_rows:
        full, filtered = index_speed(args.index_rows)
        print(f"index of {args.index_rows} rows in chromium: draw {full:.0f} ms, filtered to one layer {filtered:.0f} ms")


if __name__ == "__main__":
    main()
