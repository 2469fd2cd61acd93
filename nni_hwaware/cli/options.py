"""Command-line options from the library's config dataclasses, and library errors in the command line's words.

Two translations between the library and its command line live here, each in one place.

**Options from dataclasses.** A setting that a config dataclass of the library holds (the timing
:class:`~nni_hwaware.measure.protocol.Protocol`, nn-Meter's
:class:`~nni_hwaware.nnmeter.builder.BuildSettings`, ``ESMConfig``, ...) is added to a parser by
:func:`add_dataclass_options`: one option per field, whose flag is the field name with dashes (or one given in
``flags``), whose ``dest`` is the field name, and whose default, type and help come from the field (help:
``field(metadata={"help": ...})``, else the class docstring's ``Parameters`` entry). :func:`dataclass_from_args`
builds the dataclass back from the parsed arguments. A default therefore exists once, in the dataclass; a
function parameter's default is read with :func:`parameter_default`.

**Errors in the command line's words.** Library messages name parameters as a Python caller knows them
(``input_size must be a positive integer, got 0``), and the error declares which names those are:
``HwAwareError(message, parameter="min_runs", mentions=("runs",))`` (see :mod:`nni_hwaware.errors`).
:func:`error_message` renders such an error for the command that ran, where a declared name is an option of
that command (:func:`flag_for`: the option whose ``dest`` is the name; nothing else is looked up):

* ``parameter``, the subject, is written as its flag where it starts the message (``--input-size must be a
  positive integer, got 0``), so the same word later in the text (``port must be a TCP port``) stays a word;
  a message that does not start with it gets the flag added in parentheses;
* each name in ``mentions`` is written as its flag wherever the message uses it as a whole word
  (``--min-runs (9) exceeds --runs (5)``): a message uses a mentioned name only to mean that parameter.

No other text is rewritten, and a name that is no option of the command (a library-only setting such as
``check_every``) stays as it is. Options made by :func:`add_dataclass_options` have the field names as
``dest``, so the flag of a field is found without any table; a hand-written option whose flag differs from the
library's parameter name says so with ``dest`` (``--experiment-dir``, ``dest="working_dir"``).

Examples
--------
>>> from dataclasses import dataclass, field
>>> @dataclass
... class Settings:
...     runs: int = field(default=30, metadata={"help": "timed runs"})
...     trim: float = 0.2
>>> parser = argparse.ArgumentParser(prog="demo")
>>> add_dataclass_options(parser, Settings, flags={"trim": "--trim-share"})
>>> args = parser.parse_args(["--runs", "5"])
>>> dataclass_from_args(Settings, args)
Settings(runs=5, trim=0.2)
>>> from nni_hwaware.errors import ParameterError
>>> error_message(ParameterError("runs must be at least 1, got 0", parameter="runs"), parser)
'--runs must be at least 1, got 0'
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: The ``args`` attribute that holds the parser of the command that ran (set by :func:`remember_parsers`).
PARSER_KEY = "_cli_parser"
#: Prefix of the ``args`` attributes that list the fields :func:`add_dataclass_options` added for a class.
_FIELDS_KEY = "_cli_fields_of_"


# ------------------------------------------------------------------------------------------ errors
def remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Make every command's parser (the leaves of the sub-command tree) record itself in the parsed ``args``.

    :func:`error_message` then knows which options the command that failed has.
    """
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        parser.set_defaults(**{PARSER_KEY: parser})
    for action in subparsers:
        for sub in set(action.choices.values()):
            remember_parsers(sub)


def flag_for(parser: argparse.ArgumentParser | None, name: str) -> str | None:
    """The flag of the option of ``parser`` whose ``dest`` is ``name`` (its first long form), else ``None``.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--ci-width", dest="ci_rel_width", type=float)
    >>> flag_for(p, "ci_rel_width"), flag_for(p, "confidence")
    ('--ci-width', None)
    """
    if parser is None:
        return None
    for action in parser._actions:
        if action.dest == name and action.option_strings:
            return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
    return None


def error_message(exc: BaseException, parser: argparse.ArgumentParser | None) -> str:
    """The one-line message of ``exc`` with the parameters it declares written as ``parser``'s flags.

    Examples
    --------
    >>> from nni_hwaware.errors import ParameterError
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--runs", type=int)
    >>> _ = p.add_argument("--min-runs", type=int)
    >>> exc = ParameterError("min_runs (9) exceeds runs (5); lower it or raise runs",
    ...                      parameter="min_runs", mentions=("runs",))
    >>> error_message(exc, p)
    '--min-runs (9) exceeds --runs (5); lower it or raise --runs'
    >>> error_message(ParameterError("there were no runs", parameter="runs"), p)
    'there were no runs (--runs)'
    >>> error_message(exc, None)  # no command: the library's words
    'min_runs (9) exceeds runs (5); lower it or raise runs'
    """
    message = str(exc)
    parameter = getattr(exc, "parameter", None)
    mentions = tuple(getattr(exc, "mentions", ()))
    for name in dict.fromkeys(mentions):
        flag = flag_for(parser, name)
        if flag is not None:
            message = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", flag, message)
    flag = flag_for(parser, parameter) if parameter else None
    if flag is not None and parameter not in mentions:
        if re.match(rf"{re.escape(parameter)}(?![\w-])", message):
            message = flag + message[len(parameter):]
        else:
            message = f"{message} ({flag})"
    return message


# ------------------------------------------------------------------------------------------ options
def add_dataclass_options(parser: Any, cls: type, fields: Iterable[str] | None = None, *,
                          flags: Mapping[str, str] | None = None, help: Mapping[str, str] | None = None,
                          choices: Mapping[str, Iterable[Any]] | None = None,
                          metavars: Mapping[str, str] | None = None) -> None:
    """Add one option per field of the dataclass ``cls`` to ``parser`` (a parser or an argument group).

    Parameters
    ----------
    parser
        Where the options go.
    cls
        A dataclass; fields without a default become required options.
    fields
        The fields to add, in this order (default: every field of a type an option can hold).
    flags
        Flags that differ from ``--field-name`` (``{"ci_rel_width": "--ci-width"}``); ``dest`` stays the field
        name, so errors about the field show this flag.
    help, choices, metavars
        Per field; ``help`` replaces the field's ``metadata["help"]`` and docstring entry (``metadata`` may
        also hold ``choices`` and ``metavar``).

    Supported field types: ``bool`` (``--x``, or ``--x/--no-x`` when the default is true), ``int``, ``float``,
    ``str``, ``list[str]`` (comma-separated), each optionally ``| None``.
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields) if fields is not None else [n for n in by_name if _option_type(hints[n]) is not None]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise TypeError(f"{cls.__name__} has no init fields {unknown}")
    documented = _docstring_help(cls)
    for name in names:
        field = by_name[name]
        text = (help or {}).get(name) or field.metadata.get("help") or documented.get(name, "")
        kwargs = _option_kwargs(field, hints[name], text.replace("%", "%%"))
        pick = (choices or {}).get(name, field.metadata.get("choices"))
        if pick is not None:
            kwargs["choices"] = tuple(pick)
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        metavar = (metavars or {}).get(name, field.metadata.get("metavar"))
        if metavar is not None:
            kwargs["metavar"] = metavar
        elif kwargs.get("action") is None:  # the flag's name, not the field's: --ci-width CI_WIDTH
            kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
        parser.add_argument(flag, dest=name, **kwargs)
    key = _FIELDS_KEY + cls.__qualname__
    parser.set_defaults(**{key: tuple(dict.fromkeys([*(parser.get_default(key) or ()), *names]))})


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``cls`` built from the options :func:`add_dataclass_options` added for it, plus ``overrides``.

    Fields the command has no option for keep their defaults.
    """
    names = getattr(args, _FIELDS_KEY + cls.__qualname__, None)
    if names is None:
        raise TypeError(f"no options of {cls.__name__} were added to this command's parser")
    return cls(**{**{n: getattr(args, n) for n in names}, **overrides})


def parameter_default(func: Callable[..., Any], name: str) -> Any:
    """The default of ``func``'s parameter ``name``, so an option's default is the library's, not a copy.

    Examples
    --------
    >>> def measure(*, threads: int = 1): ...
    >>> parameter_default(measure, "threads")
    1
    """
    default = inspect.signature(func).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{func.__qualname__}'s parameter {name} has no default")
    return default


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: a comma-separated option value.

    Examples
    --------
    >>> comma_list("conv-bn-relu, fc,")
    ['conv-bn-relu', 'fc']
    """
    return [item.strip() for item in text.split(",") if item.strip()]


def _option_type(hint: Any) -> type | None:
    """The option type of a field annotation (``X | None`` -> ``X``; ``list[str]`` -> ``list``), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if len(args) != 1:
            return None
        hint = args[0]
    if typing.get_origin(hint) is list and typing.get_args(hint) == (str,):
        return list
    return hint if hint in (bool, int, float, str) else None


def _option_kwargs(field: dataclasses.Field, hint: Any, text: str) -> dict[str, Any]:
    """``add_argument`` keywords of one field: action or type, default (or required), help with the default."""
    kind = _option_type(hint)
    if kind is None:
        raise TypeError(f"field {field.name} of type {hint} cannot be a command-line option")
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        return {"type": comma_list if kind is list else kind, "required": True, "help": text}
    if kind is bool:
        action = argparse.BooleanOptionalAction if default else "store_true"
        return {"action": action, "default": default, "help": text}
    shown = ",".join(default) if kind is list else default
    suffix = "" if shown in (None, "") else f" (default: {shown})"
    return {"type": comma_list if kind is list else kind, "default": default,
            "help": (text + suffix).strip(), **({"metavar": "A,B,..."} if kind is list else {})}


def _docstring_help(cls: type) -> dict[str, str]:
    """Field descriptions from the numpy-style ``Parameters`` section of ``cls``'s docstring, one line each.

    An entry naming several fields (``space, input_size``) describes each of them; reST markup is dropped.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines[:-1]) if line.strip() == "Parameters"
                     and set(lines[i + 1].strip()) == {"-"}) + 2
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            if set(line.strip()) == {"-"} or not re.fullmatch(r"[\w, ]+", line.strip()):
                break  # the next section (its underline) or a heading
            names = [n.strip() for n in line.split(",") if n.strip()]
            continue
        for name in names:
            out[name] = (out.get(name, "") + " " + line.strip()).strip()
    return {k: re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda m: m.group(1) or m.group(2), v)
            for k, v in out.items()}
