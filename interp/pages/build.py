"""A study's neuron pages: ``StudyPages(dir).neuron(L, N)`` from Python, ``build_pages(dir)`` for the site.

The site is ``pages/index.html`` (the neurons that matter, ``study_files.IndexLimits``) and one
``L{L}_N{N}.html`` per neuron on it. Both models load once; examples, logit effects and
distributions are computed for all pages' neurons together (one forward per needed prompt).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from activations.atomic_io import write_text_atomic
from interp.pages.data import NeuronPage
from interp.pages.study_files import IndexLimits, Neuron, StudyFiles, diff_rank, neuron_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PagesResult:
    """What ``build_pages`` wrote."""

    out_dir: Path
    index: Path
    n_pages: int
    bytes: int
    seconds: float


class StudyPages:
    """One study's neuron pages as data; models load on first use."""

    def __init__(self, study_dir: str | Path, examples_per_model: int = 3, n_tokens: int = 10) -> None:
        if examples_per_model < 1 or n_tokens < 1:
            raise ValueError("examples_per_model and n_tokens must be at least 1")
        self.dir = Path(study_dir)
        self.files = StudyFiles(self.dir)
        self.examples_per_model = examples_per_model
        self.n_tokens = n_tokens

    @cached_property
    def models(self) -> dict:
        """``{"base": (model, tokenizer), "merged": (...)}``: the study's base (``study.json``'s model) and
        its merged model (``merged/``)."""
        import json

        from activations.models import load_model

        config_path = self.dir / "study.json"
        if not config_path.is_file() or not (self.dir / "merged").is_dir():
            raise FileNotFoundError(f"{self.dir} lacks study.json or merged/; neuron pages need both models: run "
                                    f"`interp run --out {self.dir}` first")
        base = load_model(json.loads(config_path.read_text())["model"])
        merged = load_model(str(self.dir / "merged"))
        return {"base": (base.model, base.tokenizer), "merged": (merged.model, merged.tokenizer)}

    @cached_property
    def caches(self) -> dict[str, Path]:
        from interp.pages.activity import cache_paths, reading_condition

        return cache_paths(self.dir, reading_condition(self.dir))

    def pages(self, neurons: Sequence[Neuron], roles: dict[Neuron, list[str]] | None = None) -> list[NeuronPage]:
        """The pages of ``neurons``, in order; each links to its neighbours in that order."""
        from activations.reader import open_cache
        from interp.pages.activity import distributions, examples, shading_scale
        from interp.pages.logits import logit_effects

        neurons = [(int(a), int(b)) for a, b in neurons]
        for neuron in neurons:
            self.files.row(neuron)  # an unknown neuron fails here, naming the table's range
        roles = roles or {}
        caches = self.caches  # missing caches fail here, before two models load
        found = examples(self.models, caches, neurons, self.examples_per_model)
        (base, tokenizer), (tuned, _) = self.models["base"], self.models["merged"]
        logits = logit_effects(base, tuned, tokenizer, neurons, self.n_tokens)
        spread = {}
        for name, path in self.caches.items():
            with open_cache(path) as cache:
                spread[name] = distributions(cache, name, neurons)
        out = []
        for i, neuron in enumerate(neurons):
            row = self.files.row(neuron)
            out.append(NeuronPage(
                neuron[0], neuron[1], roles.get(neuron, []), diff_rank(row), neuron_class(row),
                self.files.stats(neuron), self.files.causal(neuron), logits[i],
                [spread[name][i] for name in self.caches], found[neuron], shading_scale(found[neuron]),
                neurons[i - 1] if i > 0 else None, neurons[i + 1] if i + 1 < len(neurons) else None))
        return out

    def neuron(self, layer: int, index: int) -> NeuronPage:
        """One neuron's page data (``.show()`` renders it in a notebook)."""
        neuron = (int(layer), int(index))
        roles = self.files.index_neurons()
        order = list(roles)
        page = self.pages([neuron], roles)[0]
        if neuron in order:  # its neighbours on the index, as on its built page
            i = order.index(neuron)
            page = dataclasses.replace(page, previous=order[i - 1] if i > 0 else None,
                                       next=order[i + 1] if i + 1 < len(order) else None)
        return page


def build_pages(study_dir: str | Path, out_dir: str | Path | None = None, limits: IndexLimits = IndexLimits(),
                examples_per_model: int = 3, link_report: bool | None = None) -> PagesResult:
    """Write the study's neuron site into ``out_dir`` (default ``STUDY/pages``). Pages link back to
    ``STUDY/report.html`` when ``link_report`` (default: when it exists; the report stage, which writes
    the report right after, passes True)."""
    from interp.pages.render import index_html, neuron_html

    start = time.perf_counter()
    study = StudyPages(study_dir, examples_per_model)
    out = Path(out_dir) if out_dir is not None else study.dir / "pages"
    out.mkdir(parents=True, exist_ok=True)
    roles = study.files.index_neurons(limits)
    report_path = study.dir / "report.html"
    linked = report_path.is_file() if link_report is None else link_report
    report = os.path.relpath(report_path, out) if linked else None
    pages = study.pages(list(roles), roles)
    for page in pages:
        write_text_atomic(out / page.filename, neuron_html(page, report))
    rows = [study.files.index_row(neuron, r) for neuron, r in roles.items()]
    index = out / "index.html"
    write_text_atomic(index, index_html(f"neuron pages: {study.dir.name}", rows, report))
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log.info("%d neuron pages written to %s (%.1f MB, %.1f s)", len(pages), out, size / 1e6, seconds)
    return PagesResult(out, index, len(pages), size, seconds)
