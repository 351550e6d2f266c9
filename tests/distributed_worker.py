"""Run under torchrun by tests/test_distributed.py: the same work as the test's single process, split
across ranks. ``capture OUT`` captures into OUT with ``distributed_capture``; ``conditions OUT``
runs the screen (exact verification, random-sample check) and the sweep (dose-response, zero / mean /
patch interventions, matched random sets) and rank 0 pickles the results into OUT."""

from __future__ import annotations

import pickle
import sys

from activations import distributed, load_model
from activations.shards import distributed_capture


def conditions(loaded):
    """The causal conditions on a planted "fine-tune" of the tiny model (shared with the test)."""
    import numpy as np
    from model_helpers import tuned_copy

    from activations.prompt_sets import load_prompt_set
    from activations.behaviors import Behavior
    from activations.writing import writing_prompts
    from interp.causal import SweepConfig, build_proxy_suite, chat_batch, strata, sweep, write_norms, writing_batch
    from interp.causal.metrics import target_ids_tensor
    from interp.causal.screen import ScreenConfig, screen
    from interp.interventions import content_reference

    base, tokenizer = loaded.model, loaded.tokenizer
    merged = tuned_copy(base, seed=3)
    replies = ["Yes! 🎉 Parties are great. I love them.", "Because it is fun 😄 and loud. Not quiet.",
               "Sure. 🙂 Okay then!", "Dancing all night! 🥳 Then sleep. Wow."]
    writing = writing_prompts(["a", "b", "c", "d"], ["Do you like parties?", "Why?", "Ok?", "Plans?"], replies,
                              Behavior.emoji())
    neutral = load_prompt_set("neutral").texts
    suite = build_proxy_suite(merged, writing_batch(tokenizer, writing), chat_batch(tokenizer, neutral[:3]),
                              target_ids_tensor(Behavior.emoji().target_token_ids(tokenizer)), batch_size=2,
                              donor=base)
    reference = content_reference(merged, tokenizer, neutral[5:9])
    screened = screen(merged, suite, reference.means, ScreenConfig(n_shortlist=10, n_guard=2, n_random=12, max_copies=2))
    norms = write_norms(merged, reference.mean_square)
    config = SweepConfig(k_grid=(1, 4, 16), interventions=("mean", "zero", "patch"), side_by_side_k=(4, 16),
                         n_random=5, target_reduction=0.05, kl_budget=10.0, ppl_budget=10.0, max_copies=2)
    swept = sweep(merged, suite, {"screen": screened.ranking()}, reference, strata(norms),
                  np.ones(norms.shape, dtype=bool), config)
    return {"shortlist": screened.shortlist, "random": screened.random, "sweep": swept.table, "choice": swept.choice,
            "random_beaten": swept.random_beaten}


def main(mode: str, out: str) -> None:
    world = distributed.init()
    loaded = load_model("tiny-random-llama")
    if mode == "capture":
        distributed_capture(loaded, None, "emoji", out, batch_size=16, store_tokens=True).close()
    else:
        import interp.causal.proxy as proxy

        counted, measure = [0], proxy._measure_group

        def counting(*args, **kwargs):  # how many groups this rank measured itself
            counted[0] += 1
            return measure(*args, **kwargs)

        proxy._measure_group = counting
        result = conditions(loaded)
        result["groups_per_rank"] = distributed.gather_blocks(counted, world)
        if world.is_main:
            with open(out, "wb") as handle:
                pickle.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
