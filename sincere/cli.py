"""Turn a script's block of UPPER_CASE constants into its command-line flags.

A script opens with its constants, each with a trailing comment; `parse_constants(globals())`
builds an argparse parser from them once (``SLA`` -> ``--sla``, ``RESULTS_DIR`` ->
``--results-dir``), so ``--help`` lists every constant with its comment and default, and the two
can never drift apart. The result is a namespace with the same UPPER_CASE names.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*$")


def flag_name(constant: str) -> str:
    """``RESULTS_DIR`` -> ``--results-dir``."""
    return "--" + constant.lower().replace("_", "-")


def constant_comments(source: str) -> dict[str, str]:
    """Map each module-level ``NAME = ...  # comment`` assignment to its comment text."""
    comments: dict[str, str] = {}
    lines = source.splitlines()
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name) and _CONSTANT.match(t.id)]
        if not names:
            continue
        # The comment may sit on the first or the last line of a multi-line assignment.
        for lineno in (node.lineno, node.end_lineno or node.lineno):
            match = re.search(r"#\s*(.+)$", lines[lineno - 1])
            if match:
                comments[names[0]] = match.group(1).strip()
                break
    return comments


def parse_mapping(items: Sequence[str], value_type: type) -> dict[str, Any]:
    """``["granite-7b=0.1", "gemma-7b=0.3"]`` -> ``{"granite-7b": 0.1, "gemma-7b": 0.3}``."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        result[key] = value_type(value)
    return result


def _str2bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _element_type(values: Sequence[Any]) -> type:
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        return int
    if kinds <= {int, float}:
        return float
    return str


def _format_default(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "(none)"
    return str(value)


def build_parser(constants: Mapping[str, Any], description: str | None = None,
                 comments: Mapping[str, str] | None = None,
                 positional: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per constant; ``positional`` may also be given bare."""
    comments = comments or {}
    # No abbreviations: a prefix would silently set another constant (--max-queue would set
    # MAX_QUEUE_DELAY_S where the script has no MAX_QUEUE).
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    for name, default in constants.items():
        help_text = f"{comments.get(name, '')} (default: {_format_default(default)})".strip()
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": help_text,
                                  "metavar": name}
        if isinstance(default, bool):
            # A bare ``--flag`` means true; ``--flag true`` / ``--flag false`` also work.
            kwargs.update(type=_str2bool, nargs="?", const=True, metavar="{true,false}")
        elif isinstance(default, Mapping):
            value_type = _element_type(list(default.values())) if default else str
            kwargs.update(nargs="*", metavar="KEY=VALUE",
                          type=str, default=dict(default))
            kwargs["_mapping_type"] = value_type
        elif isinstance(default, (list, tuple)):
            kwargs.update(nargs="*", type=_element_type(default) if default else str,
                          default=list(default))
        elif isinstance(default, Path):
            kwargs["type"] = Path
        elif default is None:
            kwargs["type"] = str
        else:
            kwargs["type"] = type(default)
        mapping_type = kwargs.pop("_mapping_type", None)
        action = parser.add_argument(flag_name(name), **kwargs)
        if mapping_type is not None:
            action.mapping_type = mapping_type  # type: ignore[attr-defined]
    if positional:
        default = constants.get(positional)
        several = isinstance(default, (list, tuple))
        parser.add_argument("positional_value", nargs="*" if several else "?", default=None,
                            metavar=positional, help=f"same as {flag_name(positional)}",
                            type=_element_type(default) if several and default else str)
    return parser


def unknown_arguments_message(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """What was not understood, with the flags closest to each unknown one."""
    flags = [option for action in parser._actions for option in action.option_strings
             if option.startswith("--")]
    parts = []
    for item in unknown:
        if not item.startswith("-"):
            continue
        name = item.split("=", 1)[0]
        close = difflib.get_close_matches(name, flags, n=3, cutoff=0.6)
        parts.append(f"unknown flag {name}" + (f" (did you mean {', '.join(close)}?)"
                                                if close else ""))
    if not parts:
        parts.append(f"unexpected argument(s): {' '.join(unknown)}")
    return "; ".join(parts) + ". Every flag names a constant: --help lists them."


def parse_constants(namespace: Mapping[str, Any], argv: Sequence[str] | None = None,
                    description: str | None = None,
                    positional: str | None = None,
                    comments: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse the command line against the UPPER_CASE constants found in ``namespace``.

    ``namespace`` is a script's ``globals()`` (the comments come from its source file), or,
    for a module's ``main``, a dict of its command-line constants with their ``comments``.
    The returned namespace holds every constant, overridden where a flag was given.
    ``positional`` names one constant that may also be given as a bare argument
    (``process_results.py DIR``); a list constant takes several
    (``process_results.py DIR1 DIR2``).
    """
    constants = {k: v for k, v in namespace.items()
                 if _CONSTANT.match(k) and not callable(v) and not inspect.ismodule(v)}
    comments = dict(comments or {})
    source_file = namespace.get("__file__")
    if not comments and source_file and Path(source_file).is_file():
        comments = constant_comments(Path(source_file).read_text())
        # Keep the order in which the constants are written.
        order = list(comments) + [k for k in constants if k not in comments]
        constants = {k: constants[k] for k in order if k in constants}
    parser = build_parser(constants, description or namespace.get("__doc__"), comments,
                          positional)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(unknown_arguments_message(unknown, parser))
    for action in parser._actions:
        mapping_type = getattr(action, "mapping_type", None)
        if mapping_type is None:
            continue
        value = getattr(args, action.dest)
        if not isinstance(value, Mapping):
            try:
                setattr(args, action.dest, parse_mapping(value, mapping_type))
            except (argparse.ArgumentTypeError, ValueError) as exc:
                parser.error(f"{action.option_strings[0]}: {exc}")
    if positional:
        value = args.positional_value
        del args.positional_value
        if isinstance(value, list):
            if value:
                setattr(args, positional, value)
        elif value is not None:
            setattr(args, positional, type(constants[positional])(value)
                    if constants[positional] is not None else value)
    return args
