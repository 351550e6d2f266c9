"""The paper's breadth: every trait fine-tuned on each study's rows and prompted with them.

    from interp.sweep import TraitSweepConfig, run_sweep

    run_sweep(TraitSweepConfig(traits=("extraversion",)), "reports/sweep")   # resumable, like interp sweep

Layout follows the data flow: ``config`` -> ``measure`` (one model on one trait) -> ``neurons``
(in-context vs fine-tuned diffs and their overlap) -> ``table`` (rows, paired comparisons, figure)
-> ``report``; ``pipeline`` chains them as resumable stages.
"""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy): the config comes without torch.
__all__ = lazy_exports(__name__, {
    "interp.sweep.config": ("TraitSweepConfig",),
    "interp.sweep.pipeline": ("read_sweep_config", "run_sweep"),
})
