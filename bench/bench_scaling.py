"""Benchmark: cost curves (not a test). Capture against prompt count, and stages against model size.

    nice -n 10 .venv/bin/python bench/bench_scaling.py prompts --counts 100,1000 --out reports/scaling/prompts.json
    .venv/bin/python bench/bench_scaling.py figure --out reports/figures/cost_curves.png

``prompts``: ``capture`` of N neutral prompts (repeated to N; the default model, float32, default
options, as ``interp cache`` runs it), each N in a fresh subprocess: wall time, peak RSS (VmHWM) and
file size. ``figure``: reads ``reports/scaling/*.json`` (this script's and ``bench_7b_cpu.py``'s),
fits log-log slopes (cost ~ size^k) and draws the curves with the fitted exponents in the legend.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCALING = ROOT / "reports" / "scaling"
SIZES = ("smollm2-135m", "smollm2-360m", "smollm2-1.7b", "mistral-7b")

CHILD = """
import json, sys, time
from pathlib import Path
from activations import load_model
from activations.capture import capture
from activations.prompt_sets import PromptSet, load_prompt_set
n = int(sys.argv[1])
texts = load_prompt_set("neutral").texts
prompts = PromptSet.from_texts([f"{texts[i % len(texts)]} ({i})" for i in range(n)])
loaded = load_model()
Path("/proc/self/clear_refs").write_text("5")
start = time.perf_counter()
capture(loaded, None, prompts, sys.argv[2])
seconds = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))
print(json.dumps({"prompts": n, "seconds": round(seconds, 2), "peak_rss_mb": round(hwm / 1024),
                  "file_mb": round(Path(sys.argv[2]).stat().st_size / 2**20, 1)}))
"""


def prompt_curve(counts: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as folder:
        for n in counts:
            done = subprocess.run([sys.executable, "-c", CHILD, str(n), f"{folder}/acts{n}.h5"], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def slope(x: list[float], y: list[float]) -> float:
    """The exponent k of y ~ x^k (least squares on logs)."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def size_rows() -> list[dict]:
    rows = []
    for name in SIZES:
        path = SCALING / f"{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            stages = {row["stage"]: row for row in result["stages"]}
            rows.append({"shape": name, "params": stages["build"]["params"], "neurons": result["neurons"],
                         "tokens": result["tokens"], **{stage: stages[stage]["seconds"] for stage in
                                                       ("capture_base", "diff", "attribution") if stage in stages}})
    return rows


def figure(out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = size_rows()
    prompts = json.loads((SCALING / "prompts.json").read_text()) if (SCALING / "prompts.json").is_file() else []
    fits: dict[str, float] = {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for stage, label in (("capture_base", "capture"), ("diff", "diff"), ("attribution", "attribution")):
        points = [(r["neurons"], r[stage]) for r in sizes if stage in r]
        if len(points) >= 2:
            x, y = zip(*points)
            fits[f"{label}_vs_neurons"] = slope(x, y)
            fits[f"{label}_vs_params"] = slope([r["params"] for r in sizes if stage in r], y)
            left.loglog(x, y, "o-", label=f"{label} (k={fits[f'{label}_vs_neurons']:.2f})")
    left.set(xlabel="MLP neurons (135M, 360M, 1.7B, 7B shapes)", ylabel="seconds (2-core CPU, bf16)",
             title="stages vs model size, 16 prompts")
    left.legend()
    if len(prompts) >= 2:
        x, y = [r["prompts"] for r in prompts], [r["seconds"] for r in prompts]
        fits["capture_vs_prompts"] = slope(x, y)
        fits["file_vs_prompts"] = slope(x, [r["file_mb"] for r in prompts])
        fits["peak_rss_vs_prompts"] = slope(x, [r["peak_rss_mb"] for r in prompts])
        right.loglog(x, y, "o-", label=f"capture time (k={fits['capture_vs_prompts']:.2f})")
        right.loglog(x, [r["file_mb"] for r in prompts], "s-", label=f"file MB (k={fits['file_vs_prompts']:.2f})")
        right.loglog(x, [r["peak_rss_mb"] for r in prompts], "^-", label=f"peak RSS MB (k={fits['peak_rss_vs_prompts']:.2f})")
    right.set(xlabel="prompts (default model, float32)", title="capture vs prompt count")
    right.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    summary = {"sizes": sizes, "prompts": prompts, "exponents": {k: round(v, 3) for k, v in fits.items()}}
    (SCALING / "curves.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("prompts", "figure"))
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.what == "prompts":
        rows = prompt_curve([int(n) for n in args.counts.split(",")])
        out = Path(args.out or SCALING / "prompts.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
    else:
        print(json.dumps(figure(Path(args.out or ROOT / "reports" / "figures" / "cost_curves.png")), indent=1))


if __name__ == "__main__":
    main()
