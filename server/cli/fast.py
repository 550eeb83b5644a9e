"""Plain command lines read without typer's parser, from the commands' own declarations.

Typer's parsing costs more than a whole read command (it builds the command
tree and a pydantic adapter per option). For arguments written plainly (each
option once, a list option repeatable, `--opt VALUE` or `--opt=VALUE`, flags,
positional arguments) the command's keyword arguments are read here, from the
same typer declarations; anything else (`--help`, an unknown or repeated
option, a value typer might read otherwise) gives `None`, and typer parses it
and reports any problem as usual.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from typer.models import ArgumentInfo, OptionInfo, ParameterInfo
from typer.utils import get_params_from_function

__all__ = ["fast_arguments"]

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
# Parameter settings this reader understands; any other set to a non-default value
# (a prompt, an environment variable, a callback, ...) leaves the line to typer.
_UNDERSTOOD = {"default", "param_decls", "help", "metavar", "min", "max", "dir_okay"}
_PLAIN = OptionInfo()
_PLAIN_ARGUMENT = ArgumentInfo()


def fast_arguments(command: Callable[..., Any], args: Sequence[str]) -> dict[str, Any] | None:
    """`command`'s keyword arguments for a plain command line, or `None` to leave it to typer."""
    options: dict[str, tuple[str, type, bool | None]] = {}
    positional: list[tuple[str, type, bool]] = []
    params = get_params_from_function(command)
    for name, param in params.items():
        info = param.default
        if not isinstance(info, ParameterInfo) or not _plain(info):
            return None
        kind = _kind(param.annotation)
        if kind is None:
            return None
        if not isinstance(info, OptionInfo):
            positional.append((name, kind, info.default is ...))
            continue
        for decl, value in _names(name, kind, info):
            options[decl] = (name, kind, value)
    return _read(args, options, positional, params)


def _read(
    args: Sequence[str],
    options: dict[str, tuple[str, type, bool | None]],
    positional: list[tuple[str, type, bool]],
    params: dict[str, Any],
) -> dict[str, Any] | None:
    found: dict[str, Any] = {}
    waiting = list(positional)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            if not waiting:
                return None
            name, kind, _ = waiting.pop(0)
            value = _value(kind, arg, params[name].default)
            if value is None:
                return None
            found[name] = value
            continue
        decl, eq, text = arg.partition("=")
        if decl not in options:
            return None
        name, kind, flag = options[decl]
        if flag is not None:
            if eq or name in found:
                return None
            found[name] = flag
            continue
        if not eq:
            if i == len(args):
                return None
            text = args[i]
            i += 1
        if not text or text.startswith("-"):
            return None
        value = _value(kind, text, params[name].default)
        if value is None:
            return None
        if kind is list:
            found.setdefault(name, []).append(value)
        elif name in found:
            return None
        else:
            found[name] = value
    if any(required for _, _, required in waiting):
        return None
    return found


def _plain(info: ParameterInfo) -> bool:
    plain = _PLAIN if isinstance(info, OptionInfo) else _PLAIN_ARGUMENT
    return all(
        value == getattr(plain, key) for key, value in vars(info).items() if key not in _UNDERSTOOD
    )


def _kind(annotation: Any) -> type | None:
    """The kind of value a parameter takes: str, int, float, Path, bool or list (of str)."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        if len(kinds) != 1:
            return None
        annotation = kinds[0]
    if get_origin(annotation) is list:
        return list if get_args(annotation) == (str,) else None
    return annotation if annotation in (str, int, float, Path, bool) else None


def _names(name: str, kind: type, info: OptionInfo) -> list[tuple[str, bool | None]]:
    """Each way the option is written, and the value a flag written so gives."""
    decls = list(info.param_decls or ())
    if not decls:
        dashed = name.lower().replace("_", "-")
        decls = [f"--{dashed}/--no-{dashed}" if kind is bool else f"--{dashed}"]
    names: list[tuple[str, bool | None]] = []
    for decl in decls:
        on, _, off = decl.partition("/")
        names.append((on.strip(), True if kind is bool else None))
        if off:
            names.append((off.strip(), False))
    return names


def _value(kind: type, text: str, info: Any) -> Any:
    """`text` as the parameter takes it, or `None` when typer should judge it."""
    value: Any
    if kind in (int, float):
        if not _NUMBER.match(text) or (kind is int and "." in text):
            return None
        value = kind(text)
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        return value
    if kind is Path:
        path = Path(text)
        if getattr(info, "dir_okay", True) is False and path.is_dir():
            return None
        return path
    return text if kind in (str, list) else None
