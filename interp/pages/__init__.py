"""Neuron pages: a static site per study (an index of the neurons that matter, a page per neuron) and the
same data from Python (``StudyPages(dir).neuron(L, N).show()``)."""

from activations.lazy import lazy_exports

__all__ = lazy_exports(__name__, {
    "interp.pages.build": ("PagesResult", "StudyPages", "build_pages"),
    "interp.pages.data": ("NeuronPage",),
    "interp.pages.study_files": ("IndexLimits",),
})
