"""The configuration file of ``serve`` (and ``doctor``, ``config show``): a TOML file whose
keys are ``serve``'s option names, read into Click's ``default_map``.

Precedence, highest first: the command line, ``SIPBRIDGE_<OPTION>`` variables, the file,
the built-in defaults. Click gives exactly that order for every option once the file's
values are the context's ``default_map``: ``--config`` is an eager option, so its callback
loads the file before any other option is resolved. See docs/configuration.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import typer
from typer._click.core import Context, ParameterSource
from typer._click.exceptions import BadParameter
from typer._click.globals import get_current_context

from sipbridge.cli._common import Command, _fail

__all__ = [
    "CONFIG_HELP",
    "SYSTEM_CONFIG",
    "config_path",
    "default_config_path",
    "load_config",
    "load_config_callback",
    "option_label",
    "serve_params",
    "source_of",
]

SYSTEM_CONFIG = Path("/etc/sipbridge/sipbridge.toml")
CONFIG_HELP = (
    "TOML file of serve's settings (keys: the option names, e.g. sip_port = 5080); "
    "flags and SIPBRIDGE_* variables win over it (default: "
    "$XDG_CONFIG_HOME/sipbridge/sipbridge.toml for a non-root user when it exists, else "
    "/etc/sipbridge/sipbridge.toml when it exists, else none)."
)
_META_PATH = "sipbridge.config_path"
_META_KEYS = "sipbridge.config_keys"
# Parameters of serve's command that are not settings of the file.
_NOT_IN_FILE = frozenset({"config"})


@cache
def serve_params() -> tuple[Any, ...]:
    """``serve``'s Click parameters that the file may set, in declaration order."""
    from sipbridge.cli.serve_command import serve

    app = typer.Typer(add_completion=False)
    app.command(cls=Command)(serve)
    command = typer.main.get_command(app)
    return tuple(p for p in command.params if p.name is not None and p.name not in _NOT_IN_FILE)


def default_config_path(
    environ: Mapping[str, str] | None = None, is_root: bool | None = None
) -> Path | None:
    """The file read without ``--config``/``SIPBRIDGE_CONFIG``: for a user other than root
    ``$XDG_CONFIG_HOME/sipbridge/sipbridge.toml`` (``~/.config/...`` without the variable)
    when it exists, else ``/etc/sipbridge/sipbridge.toml`` when it exists, else None."""
    env = os.environ if environ is None else environ
    root = os.geteuid() == 0 if is_root is None else is_root
    candidates: list[Path] = []
    if not root:
        config_home = env.get("XDG_CONFIG_HOME", "")
        if Path(config_home).is_absolute():
            candidates.append(Path(config_home) / "sipbridge" / "sipbridge.toml")
        elif env.get("HOME"):
            candidates.append(Path(env["HOME"]) / ".config" / "sipbridge" / "sipbridge.toml")
    candidates.append(SYSTEM_CONFIG)
    for path in candidates:
        if path.is_file():
            return path
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _expected(param: Any) -> tuple[str, tuple[type, ...]]:
    """What the file must hold for one value of ``param``: its name in messages and the
    TOML types."""
    annotation = param.type_descriptor.annotation
    if param.multiple:
        return "a string", (str,)
    if annotation is bool:
        return "a boolean (true or false)", (bool,)
    if annotation is int:
        return "an integer", (int,)
    if annotation is float:
        return "a number", (int, float)
    return "a string", (str,)


def _check(ctx: Context | None, param: Any, value: Any) -> Any:
    """``value`` of the file for ``param``, converted and range-checked as the option's
    own; ValueError saying what is wrong."""
    expected, types = _expected(param)
    if param.multiple:
        if not isinstance(value, list):
            raise ValueError(f"must be an array of strings, not {_type_name(value)} ({value!r})")
        items = value
    else:
        items = [value]
    for item in items:
        if not isinstance(item, types) or (bool not in types and isinstance(item, bool)):
            what = "an array of strings" if param.multiple else expected
            raise ValueError(f"must be {what}, not {_type_name(item)} ({item!r})")
    if param.type_descriptor.annotation is bool:
        return value
    try:
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)
    except BadParameter as exc:
        raise ValueError(exc.message) from None


def load_config(path: Path, ctx: Context | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of the TOML file at ``path`` by parameter name, and the key each was
    written as; ValueError (the file, the key and what is wrong) for a file that cannot
    be read or parsed, an unknown key, a key given twice or a value of the wrong type or
    out of range."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ValueError(f"config file {path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path}: not valid TOML: not UTF-8 text") from None
    params = {p.name: p for p in serve_params() if p.name is not None}
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        param = params.get(name)
        if param is None:
            raise ValueError(
                f"config file {path}: unknown key {key!r} "
                "(keys are serve's option names, e.g. sip_port; see `sipbridge config example`)"
            )
        if name in values:
            raise ValueError(f"config file {path}: key {key!r} is given twice (as {keys[name]!r})")
        try:
            values[name] = _check(ctx, param, value)
        except ValueError as exc:
            raise ValueError(f"config file {path}: key {key!r}: {exc}") from None
        keys[name] = key
    return values, keys


def load_config_callback(ctx: Context, _param: Any, value: str | None) -> str | None:
    """``--config``'s eager callback: read the file it names (or the default one) into the
    context's ``default_map``, before any other option is resolved. One ``error:`` line and
    exit 2 when the file is wrong, or when a file named by ``--config``/``SIPBRIDGE_CONFIG``
    does not exist (a missing default file is no error)."""
    if ctx.resilient_parsing:
        return value
    path = Path(value) if value else default_config_path()
    if path is None:
        return None
    try:
        values, keys = load_config(path, ctx)
    except ValueError as exc:
        _fail(str(exc), 2)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[_META_PATH] = str(path)
    ctx.meta[_META_KEYS] = keys
    return str(path)


def config_path(ctx: Context) -> str | None:
    """The file the command's settings were read from, if any."""
    path: str | None = ctx.meta.get(_META_PATH)
    return path


def source_of(ctx: Context, name: str) -> str:
    """Where parameter ``name``'s value came from: ``flag``, ``env SIPBRIDGE_X``, ``file
    PATH`` or ``default``."""
    source = ctx.get_parameter_source(name)
    if source is ParameterSource.COMMANDLINE:
        return "flag"
    if source is ParameterSource.ENVIRONMENT:
        param = next((p for p in serve_params() if p.name == name), None)
        envvar = param.envvar if param is not None else None
        return f"env {envvar}" if isinstance(envvar, str) else "env"
    if source is ParameterSource.DEFAULT_MAP:
        return f"file {config_path(ctx)}"
    return "default"


def option_label(option: str) -> str:
    """How an error names a setting: ``option`` (``--log-level``) when it came from the
    command line, the environment or the default, ``config file PATH: key 'log_level'``
    when the file gave it."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return option
    name = option.removeprefix("--").replace("-", "_")
    if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT_MAP:
        return option
    key = ctx.meta.get(_META_KEYS, {}).get(name, name)
    return f"config file {config_path(ctx)}: key {key!r}"
