"""How every setting is read: a dataclass declares its keys, types, defaults and ranges once, and
:func:`parse` checks a mapping (a TOML section, the Settings page's dict, a peer's record) against it.

A settings dataclass carries ``__pydantic_config__ = STRICT`` and annotates each field with its
type and, where it has one, its range from ``annotated_types`` (``Annotated[int, Ge(1)]``), so
adding a setting is one line. pydantic v2 does the checking: it reports every problem with its
location, the value it got and what it expected, and its strict mode refuses what a config file
should never mean (``"no"`` for a bool, ``"8"`` for an int, a string where a list belongs), while
reading a TOML array as a tuple. pydantic is imported on first use, so ``--help`` stays fast.

Every problem becomes one :class:`ConfigError` line: ``training: batch_size must be at least 1,
got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from annotated_types import Predicate
from typing_extensions import is_typeddict

T = TypeVar("T")

STRICT: dict[str, Any] = {"extra": "forbid", "allow_inf_nan": False}
"""The pydantic config of every settings dataclass: unknown keys and NaN/Inf are errors."""

MAX_REPORTED = 3
"""Problems spelled out in the one line; the rest are counted."""

_RULES: dict[str, str] = {}


class ConfigError(ValueError):
    """A setting, the config file or the data dir is unusable; the message says how to fix it."""


def rule(expectation: str) -> Callable[[Callable[[Any], bool]], Predicate]:
    """Turn a check into an ``Annotated`` constraint whose error reads ``must be <expectation>``."""

    def wrap(check: Callable[[Any], bool]) -> Predicate:
        _RULES[check.__name__] = expectation
        return Predicate(check)

    return wrap


def parse(cls: type[T], raw: Any, *, prefix: str = "", noun: str = "setting",
          name: Callable[[str], str] | None = None) -> T:
    """Build ``cls`` from ``raw`` or raise one-line ConfigError.

    ``prefix`` names the table ``raw`` is (``"training"``), ``noun`` what its keys are called in
    messages (``"architecture field"``) and ``name`` renames a key for the reader (a flag).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix or noun + 's'} must be a table of {noun}s, got {_shown(raw)}")
    from pydantic import ValidationError

    try:
        return _adapter(cls).validate_json(_to_json(raw, prefix), strict=True)
    except ValidationError as exc:
        raise ConfigError(describe(exc.errors(include_url=False), prefix=prefix, noun=noun,
                                   name=name or (lambda key: key), known=_known_keys(cls))) from None


def check(instance: Any, *, prefix: str = "", noun: str = "setting",
          name: Callable[[str], str] | None = None) -> None:
    """Re-check a dataclass built in code (flags, tests) against its own declaration."""
    parse(type(instance), dataclasses.asdict(instance), prefix=prefix, noun=noun, name=name)


@functools.cache
def _known_keys(cls: type) -> Mapping[tuple[str, ...], frozenset[str]]:
    """The keys each table of ``cls`` declares, by the table's path: what a misspelt key is
    compared to (only with the keys of its own table)."""
    tables: dict[tuple[str, ...], frozenset[str]] = {}
    pending: list[tuple[tuple[str, ...], type]] = [((), cls)]
    while pending:
        path, current = pending.pop()
        hints = typing.get_type_hints(current)
        tables[path] = frozenset(hints)
        for key, hint in hints.items():
            for inner in (hint, *typing.get_args(hint)):
                if isinstance(inner, type) and (dataclasses.is_dataclass(inner) or is_typeddict(inner)):
                    pending.append(((*path, key), inner))
    return tables


@functools.cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _to_json(raw: Mapping[str, Any], prefix: str) -> str:
    # JSON because pydantic's strict mode reads a JSON array as a tuple but a Python list not;
    # TOML values are JSON values except dates and times, which no setting takes.
    def refuse(value: Any) -> Any:
        if isinstance(value, (tuple, set, frozenset)):
            return list(value)
        if hasattr(value, "__fspath__"):
            return str(value)
        raise ConfigError(f"{prefix or 'a setting'} holds {_shown(value)}, "
                          f"a {type(value).__name__}, which no setting takes")

    return json.dumps(raw, default=refuse)


def describe(errors: list[Any], *, prefix: str = "", noun: str = "setting",
             name: Callable[[str], str] = lambda key: key,
             known: Mapping[tuple[str, ...], Collection[str]] | None = None) -> str:
    """pydantic's error list -> one line naming each key, what it got and what it expects
    (an unknown key with the declared key of its table it most resembles, from ``known``)."""
    parts = [_one(error, prefix, noun, name, known or {}) for error in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        parts.append(f"and {len(errors) - MAX_REPORTED} more")
    return "; ".join(parts)


def _place(loc: tuple[Any, ...], prefix: str, name: Callable[[str], str]) -> tuple[str, str]:
    """(table, key): ``("limits.in_use", "cpu_share")``, ``("limits", "gpu_ids[0]")``."""
    parts = [p for p in prefix.split(".") if p] + [p for p in loc if p != "[key]"]
    last = max((i for i, p in enumerate(parts) if isinstance(p, str)), default=-1)
    table = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in parts[:max(last, 0)])
    key = "".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts[max(last, 0):])
    return table.replace(".[", "["), (name(key) if key and not table else key)


def _one(error: Mapping[str, Any], prefix: str, noun: str, name: Callable[[str], str],
         known: Mapping[tuple[str, ...], Collection[str]]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    table, key = _place(tuple(error["loc"]), prefix, name)
    where = f"{table}: {key}" if table and key else (table or key)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        *table_path, last = error["loc"]
        close = difflib.get_close_matches(str(last), known.get(tuple(table_path), ()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if not table and isinstance(error.get("input"), dict):
            return f"unknown section [{key}]{hint}"
        return f"unknown {noun}s{f' in [{table}]' if table else ''}: {key}{hint}"
    if kind == "missing":
        return f"{noun} {key!r} is missing" + (f" in {table}" if table else "")
    if kind == "value_error":  # a rule across fields (__post_init__) already names its keys
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where and not message.startswith(where) else message
    return f"{where or 'value'} must be {_expected(kind, ctx, str(error['msg']))}, got {_shown(error.get('input'))}"


def _expected(kind: str, ctx: Mapping[str, Any], msg: str) -> str:
    simple = {
        "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
        "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
        "bool_type": "a bool (true or false)", "bool_parsing": "a bool (true or false)",
        "string_type": "a string", "tuple_type": "a list", "list_type": "a list",
        "dict_type": "a table", "dataclass_type": "a table", "dataclass_exact_type": "a table",
        "none_required": "left out",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        expected = str(ctx.get("expected"))
        return f"one of {expected}" if "," in expected else expected
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, field = bounds[kind]
        return f"{words} {_number(ctx.get(field))}"
    if kind == "too_short":
        return f"a list of at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"a list of at most {ctx.get('max_length')} items"
    if kind == "predicate_failed":
        check_name = msg.split("'")[1] if "'" in msg else ""
        return _RULES.get(check_name, "valid")
    return msg.removeprefix("Input should be ").removeprefix("Value error, ")


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
