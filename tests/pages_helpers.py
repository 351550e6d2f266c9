"""A small finished study for the neuron-page tests, built in seconds from tiny models: two saved models
(base and a nudged "fine-tune"), their reading caches, the diff's neurons.csv and minimal causal files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from activations import load_model
from interp.api import diff, record
from model_helpers import save_tuned

PROMPTS = [f"The {w} walked to the market and bought {n} apples for the family." for w, n in
           [("farmer", "three"), ("teacher", "five"), ("doctor", "two"), ("child", "nine"), ("baker", "six"),
            ("sailor", "four"), ("singer", "seven"), ("pilot", "eight")]]
"""ASCII prompts, so every token is its own piece and a page's values line up with a hooked forward's."""
CHOSEN = [[1, 5], [2, 7], [0, 3]]


def build_tiny_study(out: Path) -> Path:
    """Write the study into ``out`` and return it."""
    out.mkdir(parents=True, exist_ok=True)
    base = load_model("tiny-random-llama")
    base.model.save_pretrained(out / "base_model")
    base.tokenizer.save_pretrained(out / "base_model")
    save_tuned(base, out / "merged")
    (out / "study.json").write_text(json.dumps({"model": str(out / "base_model"), "behavior": "emoji"}))
    merged = load_model(str(out / "merged"))
    caches = {}
    for name, loaded in (("base", base), ("merged", merged)):
        path = out / "caches" / name / "emoji.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        record(loaded, PROMPTS, out=path, batch_size=4).close()
        caches[name] = path
    result = diff(base=caches["base"], merged=caches["merged"])
    result.save(out / "neurons.csv")
    (out / "causal").mkdir()
    (out / "causal" / "sweep.json").write_text(json.dumps({"choice": {"ranking": "selective", "k": len(CHOSEN),
                                                                      "neurons": CHOSEN}}))
    pd.DataFrame({"layer": [1, 2, 0], "index": [5, 7, 3], "patch_estimate": [-0.25, 0.5, -0.125],
                  "mean_estimate": [-0.2, 0.4, -0.1], "guard": [0.01, 0.01, 0.01]}).to_csv(out / "causal" / "screen.csv",
                                                                                    index=False)
    (out / "causal" / "screen.json").write_text(json.dumps({
        "ranking_head": [[2, 7], [1, 5], [0, 3]],
        "shortlist": [{"layer": 2, "index": 7, "mean_estimate": 0.4, "exact_effect": 0.375, "kl_neutral": 1e-3,
                       "selectivity": 2.0, "load_bearing": False}]}))
    rows = [{"direction": "noising", "family": "chosen", "name": "chosen", "share": 0.5}]
    rows += [{"direction": "noising", "family": "leave-one-out", "name": f"without L{layer}.N{index}", "layer": layer,
              "index": index, "share": 0.5 - 0.125 * (i + 1)} for i, (layer, index) in enumerate(CHOSEN)]
    (out / "causal" / "where.json").write_text(json.dumps({"rows": rows}))
    return out
