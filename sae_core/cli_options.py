"""Command-line options made from frozen config dataclasses: one option per field, named
after it (`lm_batch_tokens` -> `--lm-batch-tokens`), typed by its annotation and explained
by the docstring under it, so the CLI never drifts from the configs."""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import textwrap
import types
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Literal, Union, get_args, get_origin, get_type_hints

NONE_WORDS = ("none", "all")
"""Values that mean None for an optional field (`--layers all`, `--max-tokens none`)."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, read from its source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, doc in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)):
            docs[node.target.id] = " ".join(doc.value.value.split())
    return docs


def _parser(tp: object) -> tuple[Callable[[str], object], list | None]:
    """(string -> value, choices) for a field annotation."""
    args = get_args(tp)
    if get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        inner, choices = _parser(next(a for a in args if a is not type(None)))
        return (lambda text: None if text.lower() in NONE_WORDS else inner(text)), choices
    if get_origin(tp) is Literal:
        return str, list(args)
    if get_origin(tp) is tuple:
        item = args[0]
        return (lambda text: tuple(item(part) for part in text.split(",") if part.strip())), None
    if tp in (int, float, str):
        return tp, None
    raise TypeError(f"no command-line form for {tp!r}")


def _typed(convert: Callable[[str], object], name: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value {text!r} for --{name}") from None
    parse.__name__ = name
    return parse


def add_config_args(parser: argparse.ArgumentParser, cls: type, *,
                    aliases: dict[str, str] | None = None) -> None:
    """One option per field of the dataclass `cls`, defaulting to the field's default."""
    docs, hints = field_docs(cls), get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").split("\n")[0])
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *([aliases[f.name]] if aliases and f.name in aliases else [])]
        default = None if f.default is MISSING else f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = docs.get(f.name, "").replace("%", "%%") + f" (default: {shown})"
        if hints[f.name] is bool:
            group.add_argument(*names, dest=f.name, default=default, help=text,
                               action=argparse.BooleanOptionalAction)
            continue
        convert, choices = _parser(hints[f.name])
        group.add_argument(*names, dest=f.name, default=default, help=text, choices=choices,
                           type=_typed(convert, flag[2:]), metavar=f.name.upper())


def config_from_args(cls: type, args: argparse.Namespace):
    """The dataclass `cls` from parsed options (its `__post_init__` checks the values)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
