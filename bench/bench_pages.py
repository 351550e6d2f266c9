"""Benchmark: the neuron pages of a study, their build time and size against the budget (not a test).

Budget (issue 27) for the default study's pages (SmolLM2-135M-Instruct, a few hundred neurons on the
index): at most ``SIZE_BUDGET_MB`` on disk and ``TIME_BUDGET_S`` to build on the CPU. The build copies
nothing of the study; it writes into a temporary folder, so the study is left as it was.
Run: .venv/bin/python bench/bench_pages.py STUDY_DIR [STUDY_DIR ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from interp.pages import build_pages

SIZE_BUDGET_MB = 20.0
TIME_BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="finished study directories")
    parser.add_argument("--threads", type=int, default=2)
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


if __name__ == "__main__":
    main()
