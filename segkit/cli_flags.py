"""Command-line flags generated from the config dataclasses: one ``--flag`` per field, with the
field's help, its default and its valid values (``metadata`` of :func:`segkit.config.opt`)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from .config import RECIPES, RunConfig, TrainConfig


def _field_type(cls: type, f: dataclasses.Field) -> tuple[Any, Any, bool]:
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(rest) == 1:
        hint = rest[0]
    return hint, typing.get_origin(hint), optional


def _number_or_none(kind: type, optional: bool) -> Any:
    def parse(s: str) -> Any:
        if optional and s.lower() == "none":
            return None
        try:
            return kind(s)
        except ValueError:
            extra = " or 'none'" if optional else ""
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}{extra}, got {s!r}"
            ) from None

    parse.__name__ = kind.__name__
    return parse


def _str_or_none(s: str) -> str | None:
    return None if s.lower() == "none" else s


def _pair(optional: bool) -> Any:
    def parse(s: str) -> tuple[float, float] | None:
        if optional and s.lower() == "none":
            return None
        try:
            a, b = (float(x) for x in s.split(","))
        except ValueError:
            extra = ", or 'none'" if optional else ""
            raise argparse.ArgumentTypeError(
                f"expected two numbers 'A,B'{extra}, got {s!r}"
            ) from None
        if a > b:
            raise argparse.ArgumentTypeError(f"expected A <= B in 'A,B', got {s!r}")
        return (a, b)

    parse.__name__ = "pair"
    return parse


def _fmt_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:.4g}" for v in value)
    return "none" if value is None else str(value)


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type[RunConfig],
    defaults: RunConfig | None = None,
    skip: Sequence[str] = (),
) -> None:
    """One ``--flag`` per field of ``cls``, with its help, its default (from ``defaults``, e.g.
    the recipe, else the dataclass) and its valid values. A flag not given is absent from the
    parsed namespace, so recipes fill what the user did not set ('none' sets None)."""
    defaults = defaults or cls()
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name == "extra" or not f.init:  # not f.init: task, fixed by cls
            continue
        flag = "--" + f.name.replace("_", "-")
        hint, origin, optional = _field_type(cls, f)
        meta = f.metadata
        text = meta.get("help", "")
        if "default" not in text:
            default = _fmt_default(getattr(defaults, f.name))
            by_recipe = cls is TrainConfig and any(f.name in r for r in RECIPES.values())
            text += f" (default: {default}" + (", or the --model recipe's)" if by_recipe else ")")
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text, "dest": f.name}
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin is tuple:
            group.add_argument(flag, type=_pair(optional), metavar="A,B", **kw)
        elif meta.get("choices"):
            group.add_argument(flag, choices=meta["choices"], **kw)
        elif hint in (int, float):
            group.add_argument(flag, type=_number_or_none(hint, optional), **kw)
        else:
            group.add_argument(flag, type=_str_or_none if optional else str, **kw)


def overrides_from_args(args: argparse.Namespace, cls: type[RunConfig]) -> dict[str, Any]:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return {f.name: getattr(args, f.name) for f in fields if hasattr(args, f.name)}


def add_method_flags(
    parser: argparse.ArgumentParser, methods: dict[str, type[RunConfig]], flag: str = "--method"
) -> None:
    """``flag`` choosing among ``methods`` (name -> config class, the first the default) and
    the flags of every method's fields (one per field name); a shared field whose defaults
    differ says each method's default in its help."""
    names = list(methods)
    parser.add_argument(flag, default=names[0], choices=names, help=f"(default: {names[0]})")
    seen: set[str] = set()
    for cls in methods.values():
        add_config_flags(parser, cls, skip=sorted(seen))
        seen |= {f.name for f in dataclasses.fields(cls)}
    for action in parser._actions:
        defaults = {
            name: getattr(cls(), action.dest)
            for name, cls in methods.items()
            if action.dest in {f.name for f in dataclasses.fields(cls) if f.init}
        }
        if len(defaults) > 1 and len({_fmt_default(v) for v in defaults.values()}) > 1:
            each = ", ".join(f"{n} {_fmt_default(v)}" for n, v in defaults.items())
            action.help = action.help.rsplit(" (default:", 1)[0] + f" (default: {each})"


def method_overrides(
    args: argparse.Namespace, methods: dict[str, type[RunConfig]], method: str
) -> dict[str, Any]:
    """The flags given for ``method``'s config class; a flag of another method only is an
    error naming it (it would be silently ignored otherwise)."""
    own = {f.name for f in dataclasses.fields(methods[method]) if f.init}
    others = {f.name for cls in methods.values() for f in dataclasses.fields(cls) if f.init}
    wrong = sorted(n for n in others - own if hasattr(args, n))
    if wrong:
        flags = ", ".join("--" + n.replace("_", "-") for n in wrong)
        raise ValueError(f"{flags}: not a flag of --method {method}")
    return overrides_from_args(args, methods[method])


# ------------------------------------------------------------ flags several commands share
def add_command(sub: Any, name: str, help: str, func: Any) -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``sub`` running ``func(args)``; ``help`` is also its description."""
    p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
    p.set_defaults(func=func)
    return p


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """--data-dir."""
    p.add_argument("--data-dir", default=None, help="dataset root (default: $SEGKIT_DATA, ./data)")


def add_device(p: argparse.ArgumentParser) -> None:
    """--device."""
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: auto)"
    )


def add_jobs(p: argparse.ArgumentParser) -> None:
    """--jobs."""
    p.add_argument(
        "--jobs", type=int, default=None,
        help="trainings side by side, one torch thread each (default: 2 on a CPU, 1 on CUDA)",
    )  # fmt: skip
