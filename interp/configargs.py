"""Command-line flags generated from frozen dataclass configs, so the CLI and Python share one source.

``add_config_arguments(parser, SomeConfig)`` adds one ``--field-name`` flag per field, with the
field's docstring as help and its default shown from the dataclass itself (nothing is copied by
hand, so the two cannot drift); ``config_from_args(args, SomeConfig)`` builds the config back, with
only the flags the user gave overriding the dataclass defaults. Field types map to parsers:
``int``/``float``/``str``, ``bool`` (``--flag`` / ``--no-flag``), ``Literal[...]`` (choices),
``tuple[int, ...]`` / ``tuple[str, ...]`` (comma-separated), ``X | None`` (``none`` gives None).
A nested dataclass field (a study's ``screen: ScreenConfig``) gets its fields' flags under its name
(``--screen-n-shortlist``), with the nested default instance's values as defaults, so a stage's
setting has one source and every one of them can be set from the command line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under its annotation), read from the class source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parser_for(tp: Any, name: str) -> tuple[Callable[[str], Any], list[str] | None]:
    """A string -> value parser for type ``tp`` and, for Literals, the allowed choices."""
    inner, optional = _strip_optional(tp)
    origin = get_origin(inner)
    choices = None
    if origin is Literal:
        choices = [str(v) for v in get_args(inner)]
        base: Callable[[str], Any] = str
    elif origin is tuple:
        element = get_args(inner)[0]

        def base(text: str) -> tuple:
            try:
                return tuple(element(part.strip()) for part in text.split(",") if part.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--{name.replace('_', '-')} takes comma-separated {element.__name__} values, got {text!r}") from None
    elif inner in (int, float, str):
        base = inner
    else:
        raise TypeError(f"no command-line parser for field {name!r} of type {tp!r}")

    def parse(text: str) -> Any:
        if optional and text.strip().lower() == "none":
            return None
        return base(text)

    parse.__name__ = getattr(inner, "__name__", "value")  # argparse names the type in its errors
    return parse, choices


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _default(f: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, f.name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    prefix: str = "",
    rename: dict[str, str] | None = None,
    defaults: Any = None,
) -> None:
    """One flag per field of the dataclass ``cls`` (module docstring); ``prefix`` namespaces the flags
    (``--prefix-field``), ``rename`` gives a field another flag name, ``defaults`` (an instance) the
    defaults shown; ``exclude`` takes nested names too (``screen.seed``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rename = rename or {}
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            nested_skip = [name.split(".", 1)[1] for name in skip if name.startswith(f"{f.name}.")]
            add_config_arguments(parser, hints[f.name], exclude=nested_skip, prefix=f"{prefix}{f.name}-".replace("_", "-"),
                                 defaults=_default(f, defaults))
            continue
        flag = "--" + prefix + rename.get(f.name, f.name).replace("_", "-")
        default = _default(f, defaults)
        help_text = f"{docs.get(f.name, '')} (default: {_shown(default)})".replace("%", "%%")
        dest = f"{prefix.replace('-', '_')}{f.name}"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        parse, choices = _parser_for(hints[f.name], f.name)
        parser.add_argument(flag, dest=dest, type=parse, choices=choices, default=None, help=help_text,
                            metavar=None if choices else f.name.upper())


def config_from_args(args: argparse.Namespace, cls: type, *, prefix: str = "", base: Any = None, **fixed: Any) -> Any:
    """``cls`` (or ``base`` with replacements) built from the flags the user gave; ``fixed`` wins."""
    hints = typing.get_type_hints(cls)
    given = {}
    for f in dataclasses.fields(cls):
        if f.init and dataclasses.is_dataclass(hints[f.name]):
            inner = getattr(base, f.name) if base is not None else _default(f, None)
            given[f.name] = config_from_args(args, hints[f.name], prefix=f"{prefix}{f.name}-".replace("_", "-"),
                                             base=inner)
            continue
        value = getattr(args, f"{prefix.replace('-', '_')}{f.name}", None)
        if value is not None:
            given[f.name] = value
    given.update(fixed)
    return dataclasses.replace(base, **given) if base is not None else cls(**given)


def config_from_json(path: str | Path, cls: type, missing_hint: str) -> Any:
    """The frozen config ``cls`` saved as JSON (``dataclasses.asdict``) at ``path``: lists become
    tuples again and keys the class no longer has are dropped; a missing file is an error that ends
    with ``missing_hint`` (what to run to create it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {missing_hint}")
    return _from_dict(cls, json.loads(path.read_text()))


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kept = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _from_dict(hints[f.name], value)
        kept[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kept)
