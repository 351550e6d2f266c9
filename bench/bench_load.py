"""Benchmark: cold vs warm load of the embedded default model (not a test; prints measured times).

Cold = dequantize the GGUF into a fresh cache directory; warm = load the cached safetensors.
Run: .venv/bin/python bench/bench_load.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

CHILD = """
import time
t = time.perf_counter()
from activations import load_model
imported = time.perf_counter()
load_model("smollm2-135m-instruct")
print(f"{imported - t:.3f} {time.perf_counter() - imported:.3f}")
"""


def timed_load(cache: str) -> tuple[float, float]:
    env = dict(os.environ, NEURODIFF_CACHE=cache, TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    import_s, load_s = map(float, out.stdout.split()[-2:])
    return import_s, load_s


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_load(cache)
        warm = [timed_load(cache) for _ in range(3)]
    best_warm = min(w[1] for w in warm)
    print(f"cold load (GGUF -> safetensors cache): {cold[1]:6.2f} s  (+ {cold[0]:.2f} s imports)")
    print(f"warm load, best of 3:                  {best_warm:6.2f} s  (+ {min(w[0] for w in warm):.2f} s imports)")
    print(f"cold / warm ratio:                     {cold[1] / best_warm:6.1f}x   target: warm < 2 s")


if __name__ == "__main__":
    main()
