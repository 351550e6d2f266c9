"""Package exports that import their module on first use, so ``import interp.cli`` stays light.

A package ``__init__`` calls ``lazy_exports(__name__, {"pkg.module": ("name", ...)})`` instead of
importing every module: ``from pkg import name`` and ``pkg.name`` still work (PEP 562 module
``__getattr__``), but torch and transformers load only when a name that needs them is first used.
The command line relies on this to answer ``--help`` and reject bad arguments before any heavy
import (``tests/test_cli_startup.py``).

An export may share its name with a submodule (``interp.stats.diff`` the function and the module):
importing the submodule would set the package attribute to the module, so the package ignores that
assignment and the name keeps meaning the export, as it did when the ``__init__`` imported it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable, Mapping


class _LazyPackage(types.ModuleType):
    _lazy_sources: dict[str, str]

    def __getattr__(self, name: str) -> object:
        source = self.__dict__.get("_lazy_sources", {}).get(name)
        if source is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        self.__dict__[name] = value  # resolved once; later lookups are plain attribute reads
        return value

    def __setattr__(self, name: str, value: object) -> None:
        # The import system binds a submodule to its package's attribute; an export of that name wins.
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_sources", {}) \
                and value.__name__ == f"{self.__name__}.{name}":
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._lazy_sources})


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]) -> list[str]:
    """Make ``package`` export each module's names lazily; returns the names (for ``__all__``)."""
    module = sys.modules[package]
    sources = {name: source for source, names in exports.items() for name in names}
    module.__class__ = _LazyPackage
    module.__dict__["_lazy_sources"] = sources
    return sorted(sources)
