"""``NeuronSet``: which MLP neurons an intervention touches, as ``(layer, index)`` pairs.

A set is built from explicit pairs, from the top of a ranked neuron table (``neurons.csv``, see
docs/DESIGN.md), or drawn at random with the same per-layer counts as another set (the matched
control of the causal experiments). Interventions consume it as per-layer index tensors.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from activations.sites import neuron_sites

log = logging.getLogger(__name__)

Neuron = tuple[int, int]
"""``(layer, index)``: index is the neuron's position in the layer's neuron vector."""


@dataclass(frozen=True)
class NeuronSet:
    """An immutable, sorted, duplicate-free set of neurons."""

    neurons: tuple[Neuron, ...]
    """``(layer, index)`` pairs; stored sorted by layer then index."""

    def __post_init__(self) -> None:
        pairs = []
        for pair in self.neurons:
            if len(pair) != 2:
                raise ValueError(f"a neuron is a (layer, index) pair, got {pair!r}")
            layer, index = (int(v) for v in pair)
            if layer < 0 or index < 0:
                raise ValueError(f"neuron {pair!r} has a negative layer or index")
            pairs.append((layer, index))
        duplicates = [pair for pair, n in Counter(pairs).items() if n > 1]
        if duplicates:
            raise ValueError(f"neurons listed more than once: {duplicates[:5]}; pass each (layer, index) once")
        # Sorted storage makes equal sets compare equal and gives stable per-layer tensors.
        object.__setattr__(self, "neurons", tuple(sorted(pairs)))

    @classmethod
    def from_pairs(cls, pairs: Iterable[Neuron]) -> NeuronSet:
        return cls(tuple((int(layer), int(index)) for layer, index in pairs))

    @classmethod
    def at(cls, site: str | int, indices: Iterable[int]) -> NeuronSet:
        """Neurons ``indices`` of one site, named as TransformerLens does (``"blocks.29.mlp.hook_post"``)
        or by its layer number."""
        return cls.from_pairs((site_layer(site), int(i)) for i in indices)

    @classmethod
    def from_table(cls, table: pd.DataFrame, top_k: int | None = None, *, flagged_only: bool = True) -> NeuronSet:
        """The first ``top_k`` neurons of a ranked table (all of them when ``top_k`` is None)."""
        ranked = ranked_neurons(table, flagged_only=flagged_only)
        if top_k is not None:
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
            ranked = ranked[:top_k]
        return cls.from_pairs(ranked)

    @classmethod
    def from_csv(cls, path: str | Path, top_k: int | None = None, *, flagged_only: bool = True) -> NeuronSet:
        return cls.from_table(read_neuron_table(path), top_k, flagged_only=flagged_only)

    def __len__(self) -> int:
        return len(self.neurons)

    def __iter__(self) -> Iterator[Neuron]:
        return iter(self.neurons)

    def __contains__(self, neuron: object) -> bool:
        return neuron in set(self.neurons)

    @property
    def layers(self) -> list[int]:
        """Layers holding at least one neuron of the set, ascending."""
        return sorted({layer for layer, _ in self.neurons})

    def counts(self) -> dict[int, int]:
        """Neurons per layer."""
        return dict(sorted(Counter(layer for layer, _ in self.neurons).items()))

    def by_layer(self, device: str | torch.device | None = None) -> dict[int, Tensor]:
        """Per layer, the neuron indices as a sorted int64 tensor (what the hooks index with)."""
        grouped: dict[int, list[int]] = {}
        for layer, index in self.neurons:
            grouped.setdefault(layer, []).append(index)
        return {layer: torch.tensor(idx, dtype=torch.long, device=device) for layer, idx in grouped.items()}

    def union(self, other: NeuronSet) -> NeuronSet:
        return NeuronSet.from_pairs(set(self.neurons) | set(other.neurons))

    def to_list(self) -> list[list[int]]:
        """JSON-friendly ``[[layer, index], ...]``."""
        return [[layer, index] for layer, index in self.neurons]

    def check_fits(self, widths: Mapping[int, int]) -> None:
        """Raise if a neuron's layer or index does not exist in a model with these layer widths."""
        missing = [layer for layer in self.layers if layer not in widths]
        if missing:
            raise ValueError(
                f"neuron set uses layers {missing} but the model has layers 0..{max(widths)}; "
                "was the neuron table made for another model?"
            )
        too_big = [(layer, index) for layer, index in self.neurons if index >= widths[layer]]
        if too_big:
            raise ValueError(
                f"neuron indices out of range {too_big[:5]} (layer width {widths[too_big[0][0]]}); "
                "was the neuron table made for another model?"
            )

    def random_matched(
        self, widths: Mapping[int, int], seed: int, exclude: NeuronSet | None = None
    ) -> NeuronSet:
        """A uniformly random set with the same neurons-per-layer counts, drawn without replacement.

        Every neuron of a layer is eligible except those in ``exclude`` (typically the flagged
        neurons, so the control measures "any other neurons of the same layers"). Seeded: the same
        ``seed`` gives the same set.
        """
        self.check_fits(widths)
        excluded = set(exclude.neurons) if exclude is not None else set()
        rng = np.random.default_rng(seed)
        drawn: list[Neuron] = []
        for layer, count in self.counts().items():
            eligible = np.array([i for i in range(widths[layer]) if (layer, i) not in excluded], dtype=np.int64)
            if len(eligible) < count:
                raise ValueError(
                    f"layer {layer}: cannot draw {count} random neurons from the {len(eligible)} left after "
                    "excluding the flagged ones; use a smaller top-k or exclude fewer neurons"
                )
            drawn.extend((layer, int(i)) for i in rng.choice(eligible, size=count, replace=False))
        return NeuronSet.from_pairs(drawn)

    def random_matched_sets(
        self, widths: Mapping[int, int], n_sets: int, seed: int, exclude: NeuronSet | None = None
    ) -> list[NeuronSet]:
        """``n_sets`` matched random sets, set ``i`` drawn with seed ``(seed, i)`` (reproducible one by one)."""
        return [
            self.random_matched(widths, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), exclude)
            for i in range(n_sets)
        ]


def site_layer(site: str | int) -> int:
    """The layer of a neuron site name (``blocks.{L}.mlp.hook_post``) or a layer number."""
    if isinstance(site, int):
        return site
    match = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_post", str(site).strip())
    if match is None:
        raise ValueError(f"{site!r} is not a neuron site; name one like 'blocks.12.mlp.hook_post' (or pass the layer)")
    return int(match.group(1))


def as_neuron_set(neurons: NeuronSet | str | int | Mapping[str | int, Iterable[int]] | Iterable[Neuron],
                  indices: Iterable[int] | None = None) -> NeuronSet:
    """Any way a user names neurons: a ``NeuronSet``, a site (name or layer) with ``indices``, a
    mapping site -> indices, or ``(layer, index)`` pairs."""
    if isinstance(neurons, NeuronSet):
        return neurons
    if isinstance(neurons, (str, int)):
        if indices is None:
            raise ValueError(f"site {neurons!r} needs the indices of its neurons, e.g. ablate(model, {neurons!r}, [12, 40])")
        return NeuronSet.at(neurons, indices)
    if isinstance(neurons, Mapping):
        return NeuronSet.from_pairs((site_layer(site), int(i)) for site, ids in neurons.items() for i in ids)
    return NeuronSet.from_pairs(neurons)


def layer_widths(model: nn.Module) -> dict[int, int]:
    """``{layer: d_mlp}`` for every layer of the model."""
    sites = neuron_sites(model)
    if any(site.key != site.layer for site in sites):  # several sites per layer: (layer, index) names none
        raise ValueError(f"this mixture-of-experts model has several neuron sites per layer ({sites[0].name}, ...), so "
                         "a (layer, index) neuron is ambiguous: name expert sites, e.g. ablate(model, "
                         "'blocks.0.mlp.experts.1.hook_post', [0, 3])")
    return {site.layer: site.d_mlp for site in sites}


def read_neuron_table(path: str | Path) -> pd.DataFrame:
    """Read a ``neurons.csv`` (needs ``layer`` and ``index`` columns), keeping its row order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neuron table {path} not found; make one with `interp diff` or pass a CSV with layer,index columns")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    table.attrs["path"] = str(path)  # so that errors about its rows can name the file
    return table


def check_table_fits(table: pd.DataFrame, widths: Mapping[int, int]) -> None:
    """Raise ``ValueError`` naming the rows of a ``layer``, ``index`` table (by their line in the CSV,
    the header being line 1) whose neuron the model with these layer widths does not have."""
    source = table.attrs.get("path", "the neuron table")
    missing = [column for column in ("layer", "index") if column not in table.columns]
    if missing:
        raise ValueError(f"{source} lacks the {' and '.join(missing)} column; expected layer,index,...")
    layers = pd.to_numeric(table["layer"], errors="coerce").to_numpy(dtype=float)
    indices = pd.to_numeric(table["index"], errors="coerce").to_numpy(dtype=float)
    bad = []
    for row, (layer, index) in enumerate(zip(layers, indices)):
        whole = bool(np.isfinite(layer) and np.isfinite(index) and layer.is_integer() and index.is_integer())
        if not (whole and int(layer) in widths and 0 <= index < widths[int(layer)]):
            bad.append(f"line {row + 2} (layer {table['layer'].iloc[row]}, index {table['index'].iloc[row]})")
    if bad:
        shapes = sorted(set(widths.values()))
        raise ValueError(f"{source} names neurons the model does not have (it has layers 0..{max(widths)} of "
                         f"{'/'.join(map(str, shapes))} neurons) at {', '.join(bad[:5])}"
                         f"{f' and {len(bad) - 5} more rows' if len(bad) > 5 else ''}; was the table made for another "
                         "model? Pass that model, or a table of this one")


def ranked_neurons(table: pd.DataFrame, *, flagged_only: bool = True) -> list[Neuron]:
    """The table's neurons in rank order (``rank`` column, else row order).

    With ``flagged_only``, only candidates are kept: rows whose ``flagged`` column is true (an
    ``interp diff`` table), or, for tables without one, rows with a non-empty ``class``; a table
    with neither keeps every row. The number left out is logged, never silent.
    """
    for column in ("layer", "index"):
        if column not in table.columns:
            raise ValueError(f"neuron table lacks a {column!r} column (has {list(table.columns)}); expected layer,index,...")
    if flagged_only and "flagged" in table.columns:
        kept = table[table["flagged"].astype(str).str.lower().isin(("true", "1"))]
    elif flagged_only and "class" in table.columns:
        kept = table[table["class"].fillna("").astype(str).str.strip() != ""]
    else:
        kept = table
    if len(kept) < len(table):
        log.info("%d of %d neurons of the table are flagged candidates; the others are left out", len(kept), len(table))
    table = kept
    if "rank" in table.columns:  # an explicit rank beats file order
        table = table.sort_values("rank", kind="stable")
    return [(int(layer), int(index)) for layer, index in zip(table["layer"], table["index"])]


def flagged_set(table: pd.DataFrame) -> NeuronSet:
    """Every flagged neuron of a table (what matched random controls exclude)."""
    return NeuronSet.from_pairs(ranked_neurons(table, flagged_only=True))
