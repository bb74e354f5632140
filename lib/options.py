"""A setting is defined once: as a dataclass field, with its help text. The command line, the profile
files and the results files all take their settings from these dataclasses.

``option(help, ...)`` is a field's metadata; ``add_options`` turns a dataclass into argparse options
(``--batch-size`` for ``batch_size``); ``strict`` builds a dataclass from a profile's mapping and names
the file when a key is not one of its fields (a typo is an error, not a silently ignored setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    help: str,
    *,
    flags: tuple[str, ...] = (),
    choices: tuple | None = None,
    metavar: str | None = None,
    cli: bool = True,
) -> dict:
    """Metadata of a settings field: its help text, extra option strings (aliases), allowed values;
    ``cli=False`` keeps it off the command line (set from a profile only)."""
    return {"help": help, "flags": flags, "choices": choices, "metavar": metavar, "cli": cli}


def _base_type(hint) -> type:
    """``int | None`` -> int; ``tuple[str, ...]`` -> tuple."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _base_type(args[0])
    return typing.get_origin(hint) or hint


def add_options(
    parser: argparse.ArgumentParser, cls: type, *, overrides: bool = False, skip: tuple[str, ...] = ()
) -> None:
    """One ``--name`` option per field of ``cls`` that has ``option()`` metadata. With ``overrides``
    every option defaults to None: the value then comes from elsewhere (a profile) unless it is given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta or not meta.get("cli", True) or f.name in skip:
            continue
        kind = _base_type(hints[f.name])
        default = None if overrides else (f.default if f.default is not _MISSING else None)
        flags = (f"--{f.name.replace('_', '-')}", *meta["flags"])
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": default}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if overrides or f.default else "store_true"
        else:
            kwargs.update(type=kind, choices=meta["choices"], metavar=meta["metavar"])
            if f.default is _MISSING and f.default_factory is _MISSING and not overrides:
                kwargs["required"] = True
        parser.add_argument(*flags, **kwargs)


def from_args(cls: type, args: argparse.Namespace, **fixed):
    """An instance of ``cls`` from the parsed options (fields without an option keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **fixed})


def given(cls: type, args: argparse.Namespace) -> dict:
    """The fields of ``cls`` given on the command line (options added with ``overrides``)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def strict(cls: type, values: dict | None, where: str):
    """``cls(**values)``, or a ValueError naming ``where`` (a file and section) and every unknown key."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    return cls(**values)


def job_options(parser: argparse.ArgumentParser, job: type, recipe: type, title: str) -> None:
    """A job's options, then its recipe's (a group named ``title``) as overrides of a profile's."""
    add_options(parser, job)
    add_options(parser.add_argument_group(title), recipe, overrides=True)


def job_from(job: type, recipe: type, args: argparse.Namespace):
    """The ``job`` that options added by ``job_options`` ask for; the recipe fields given go in its
    ``overrides``."""
    return from_args(job, args, overrides=given(recipe, args))
