"""The configuration file of ``serve`` (``--config``, SIPBRIDGE_CONFIG, the default paths),
its precedence (flags > SIPBRIDGE_* > file > defaults), its errors, and ``sipbridge config
show`` / ``config example``."""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.cli.config_command import example_toml, options_markdown
from sipbridge.cli.config_file import default_config_path, serve_params
from sipbridge.config import ServeSettings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SIPBRIDGE_* from the outer environment, no configuration file of this machine's."""
    for name in list(os.environ):
        if name.startswith("SIPBRIDGE_") and not name.startswith("SIPBRIDGE_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setattr("sipbridge.cli.config_file.SYSTEM_CONFIG", tmp_path / "etc.toml")
    return home


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SIPBRIDGE_DB": f"sqlite:///{tmp_path / 'cli.db'}"}


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[ServeSettings]:
    calls: list[ServeSettings] = []
    module = types.ModuleType("sipbridge.runtime.server")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipbridge.runtime.server", module)
    monkeypatch.setattr("sipbridge.cli.serve_command.listen_problem", lambda _listeners: None)
    return calls


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def serve(runner: CliRunner, env: dict[str, str], *args: str) -> ServeSettings:
    calls: list[ServeSettings] = []
    module = sys.modules["sipbridge.runtime.server"]
    module.run = calls.append  # type: ignore[attr-defined]
    result = runner.invoke(app, ["serve", *args], env=env)
    assert result.exit_code == 0, result.output
    [settings] = calls
    return settings


def error(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    """The one ``error:`` line of a command that must exit 2."""
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_file_values_are_used_by_serve(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "sipbridge.toml",
        'sip_port = 5080\nmedia-timeout = 12\nlog_level = "warning"\ntcp = false\n'
        'codecs = "pcma,pcmu"\ntrusted_proxy = ["10.0.0.5", "10.0.0.6"]\n'
        "session_expires = 0\n",
    )
    settings = serve(runner, env, "--config", str(config))
    assert (settings.sip_port, settings.media_timeout, settings.log_level) == (
        5080,
        12.0,
        "warning",
    )
    assert settings.tcp is False and settings.codecs == ("pcma", "pcmu")
    assert settings.trusted_proxies == ("10.0.0.5", "10.0.0.6")
    assert settings.session_expires == 0
    # Without the file: the defaults.
    default = serve(runner, env)
    assert (default.sip_port, default.tcp, default.trusted_proxies) == (5060, True, ())


def test_env_beats_file_and_flag_beats_env(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings], tmp_path: Path
) -> None:
    config = write(tmp_path / "c.toml", 'sip_port = 5080\nmax_calls = 7\nsrtp = "off"\n')
    environ = {**env, "SIPBRIDGE_CONFIG": str(config), "SIPBRIDGE_SIP_PORT": "5090"}
    settings = serve(runner, environ)
    assert (settings.sip_port, settings.max_calls, settings.srtp) == (5090, 7, "off")
    settings = serve(runner, environ, "--sip-port", "5099", "--srtp", "required")
    assert (settings.sip_port, settings.max_calls, settings.srtp) == (5099, 7, "required")
    # A list option: the variable replaces the file's list, the flags replace both.
    write(config, 'trusted_proxy = ["10.0.0.5"]\n')
    environ = {**env, "SIPBRIDGE_CONFIG": str(config)}
    assert serve(runner, environ).trusted_proxies == ("10.0.0.5",)
    environ["SIPBRIDGE_TRUSTED_PROXIES"] = "10.0.0.7"
    assert serve(runner, environ).trusted_proxies == ("10.0.0.7",)
    assert serve(runner, environ, "--trusted-proxy", "10.0.0.8").trusted_proxies == ("10.0.0.8",)
    # A boolean: --tcp on the command line beats tcp = false in the file.
    write(config, "tcp = false\n")
    assert serve(runner, {**env, "SIPBRIDGE_CONFIG": str(config)}, "--tcp").tcp is True
    assert serve(runner, {**env, "SIPBRIDGE_CONFIG": str(config), "SIPBRIDGE_TCP": "1"}).tcp


def test_flag_config_beats_variable_config(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings], tmp_path: Path
) -> None:
    one = write(tmp_path / "one.toml", "sip_port = 5081\n")
    two = write(tmp_path / "two.toml", "sip_port = 5082\n")
    environ = {**env, "SIPBRIDGE_CONFIG": str(one)}
    assert serve(runner, environ, "--config", str(two)).sip_port == 5082


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sip_prt = 1\n", "unknown key 'sip_prt'"),
        ("[server]\nsip_port = 1\n", "unknown key 'server'"),
        ("config = 'x.toml'\n", "unknown key 'config'"),
        ('sip_port = "5080"\n', "key 'sip_port': must be an integer, not a string ('5080')"),
        ("sip_port = 5080.5\n", "key 'sip_port': must be an integer, not a number"),
        ("tcp = 1\n", "key 'tcp': must be a boolean (true or false), not an integer"),
        ("max_calls = true\n", "key 'max_calls': must be an integer, not a boolean"),
        ("sip_host = 1\n", "key 'sip_host': must be a string, not an integer"),
        ('trusted_proxy = "10.0.0.5"\n', "key 'trusted_proxy': must be an array of strings"),
        ("trusted-proxy = [1]\n", "key 'trusted-proxy': must be an array of strings, not an"),
        ("sip_port = 70000\n", "key 'sip_port': Input should be less than or equal to 65535"),
        ("max_calls = 0\n", "key 'max_calls': Input should be greater than or equal to 1"),
        ('log_level = "loud"\n', "key 'log_level': 'loud' is not one of debug"),
        ('codecs = "speex"\n', "key 'codecs': unknown codec 'speex'"),
        ('rtp_ports = "20-10"\n', "key 'rtp_ports': port range '20-10'"),
        ('public_ip = "example"\n', "key 'public_ip': 'example' is not an IP address"),
        ("sip_port = 5080\nsip-port = 5081\n", "key 'sip-port' is given twice (as 'sip_port')"),
        ("sip_port = \n", "not valid TOML"),
    ],
)
def test_bad_file_is_one_error_naming_file_and_key(
    runner: CliRunner,
    env: dict[str, str],
    fake_server: list[ServeSettings],
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    config = write(tmp_path / "bad.toml", text)
    for command in (["serve"], ["doctor"], ["config", "show"]):
        line = error(runner, env, *command, "--config", str(config))
        assert line.startswith(f"error: config file {config}: "), line
        assert message in line
    assert fake_server == []


def test_invalid_value_from_a_flag_still_names_the_flag(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings], tmp_path: Path
) -> None:
    config = write(tmp_path / "c.toml", 'log_level = "debug"\n')
    line = error(runner, env, "serve", "--config", str(config), "--log-level", "loud")
    assert line.startswith("error: --log-level: 'loud'")


def test_missing_config_file_is_an_error_missing_default_is_fine(
    runner: CliRunner, env: dict[str, str], fake_server: list[ServeSettings], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.toml"
    assert error(runner, env, "serve", "--config", str(missing)) == (
        f"error: config file {missing}: not found"
    )
    environ = {**env, "SIPBRIDGE_CONFIG": str(missing)}
    assert error(runner, environ, "serve") == f"error: config file {missing}: not found"
    assert fake_server == []
    assert serve(runner, env).sip_port == 5060  # no default file: the defaults


def test_default_files(
    runner: CliRunner,
    env: dict[str, str],
    fake_server: list[ServeSettings],
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system = write(tmp_path / "etc.toml", "sip_port = 5071\n")
    if os.geteuid() == 0:
        monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert serve(runner, env).sip_port == 5071
    user = write(home / "config" / "sipbridge" / "sipbridge.toml", "sip_port = 5072\n")
    assert serve(runner, env).sip_port == 5072  # the user's file, not the system's as well
    assert default_config_path(is_root=False) == user
    assert default_config_path(is_root=True) == system  # root reads /etc only
    environ = {"HOME": str(home)}  # no XDG_CONFIG_HOME: ~/.config
    assert default_config_path(environ, is_root=False) == system
    dot = write(home / ".config" / "sipbridge" / "sipbridge.toml", "")
    assert default_config_path(environ, is_root=False) == dot
    system.unlink()
    assert default_config_path(is_root=True) is None


def show(runner: CliRunner, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["config", "show", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_config_show_sources_and_masking(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "c.toml",
        'db = "postgresql://app:s3cret@db.example/sipbridge"\nsip_port = 5080\n'
        'http_port = 8181\ntrusted_proxy = ["10.0.0.5"]\n',
    )
    environ = {"SIPBRIDGE_HTTP_PORT": "8282", "SIPBRIDGE_CONFIG": str(config)}
    data = show(runner, environ, "--max-calls", "9", "--http-host", "127.0.0.2")
    assert data["config_file"] == str(config)
    rows = {row["key"]: row for row in data["settings"]}
    assert [row["key"] for row in data["settings"]] == [p.name for p in serve_params()]
    assert rows["db"]["value"] == "postgresql://app:***@db.example/sipbridge"
    assert rows["db"]["source"] == f"file {config}"
    assert (rows["sip_port"]["value"], rows["sip_port"]["source"]) == (5080, f"file {config}")
    assert (rows["http_port"]["value"], rows["http_port"]["source"]) == (
        8282,
        "env SIPBRIDGE_HTTP_PORT",
    )
    assert (rows["max_calls"]["value"], rows["max_calls"]["source"]) == (9, "flag")
    assert (rows["rtp_ports"]["value"], rows["rtp_ports"]["source"]) == ("10000-20000", "default")
    assert rows["trusted_proxy"]["value"] == ["10.0.0.5"]
    assert rows["sip_port"]["env"] == "SIPBRIDGE_SIP_PORT"
    assert rows["sip_port"]["flag"] == "--sip-port"
    text = runner.invoke(app, ["config", "show", "--max-calls", "9"], env=environ)
    assert text.exit_code == 0, text.output
    assert "s3cret" not in text.stdout and "s3cret" not in json.dumps(data)
    assert text.stdout.splitlines()[0] == f"config file: {config}"
    line = next(line for line in text.stdout.splitlines() if line.startswith("sip_port "))
    assert line.split() == ["sip_port", "5080", "file", str(config)]
    line = next(line for line in text.stdout.splitlines() if line.startswith("max_calls "))
    assert line.split() == ["max_calls", "9", "flag"]
    line = next(line for line in text.stdout.splitlines() if line.startswith("http_port "))
    assert line.split() == ["http_port", "8282", "env", "SIPBRIDGE_HTTP_PORT"]
    # An environment variable's database password is masked too.
    data = show(runner, {"SIPBRIDGE_DB": "postgresql://u:pw@h/d"})
    rows = {row["key"]: row for row in data["settings"]}
    assert rows["db"]["value"] == "postgresql://u:***@h/d"
    assert rows["db"]["source"] == "env SIPBRIDGE_DB"
    assert data["config_file"] is None


def test_config_show_default_database(runner: CliRunner, home: Path) -> None:
    rows = {row["key"]: row for row in show(runner, {})["settings"]}
    assert rows["db"] == {
        "key": "db",
        "value": f"sqlite:///{home / 'data' / 'sipbridge' / 'sipbridge.db'}",
        "source": "default",
        "flag": "--db",
        "env": "SIPBRIDGE_DB",
    }


def test_config_example_parses_and_gives_the_defaults(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    result = runner.invoke(app, ["config", "example"])
    assert result.exit_code == 0
    text = result.stdout
    assert text == example_toml()
    assert tomllib.loads(text) == {}  # every setting commented out: the defaults
    for param in serve_params():  # every option named, with its flag, variable and help
        assert f"# {param.name}: {param.opts[0]}" in text and str(param.envvar) in text
    example = write(tmp_path / "example.toml", text)
    data = show(runner, env, "--config", str(example))
    assert {row["source"] for row in data["settings"] if row["key"] != "db"} == {"default"}
    # Uncommented, the same values, now from the file.
    setting = re.compile(r"^#([a-z_]+ = .*)$", re.MULTILINE)
    uncommented = write(tmp_path / "uncommented.toml", setting.sub(r"\1", text))
    values = tomllib.loads(uncommented.read_text())
    assert set(values) == {p.name for p in serve_params() if p.default is not None or p.multiple}
    from_file = show(runner, env, "--config", str(uncommented))["settings"]
    defaults = show(runner, env)["settings"]
    assert [row["value"] for row in from_file] == [row["value"] for row in defaults]
    sources = {row["key"]: row["source"] for row in from_file}
    assert sources["sip_port"] == f"file {uncommented}"


def test_config_show_checks_the_values(runner: CliRunner, env: dict[str, str]) -> None:
    line = error(runner, env, "config", "show", "--rtp-ports", "20-10")
    assert line.startswith("error: --rtp-ports:")


def test_docs_list_every_option() -> None:
    text = DOC.read_text()
    assert options_markdown() in text, "regenerate the table: sipbridge.cli.config_command"
    for param in serve_params():
        assert f"`{param.name}`" in text and f"`{param.opts[0]}" in text
    assert "/etc/sipbridge/sipbridge.toml" in text and "SIPBRIDGE_CONFIG" in text


def test_help_names_config(runner: CliRunner) -> None:
    assert "config" in runner.invoke(app, ["--help"]).stdout
    for command in (["serve"], ["doctor"], ["config", "show"]):
        assert "--config" in runner.invoke(app, [*command, "--help"]).stdout
