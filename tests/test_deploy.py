"""The deployment files under deploy/ checked against the server they deploy.

- deploy/systemd/sipbridge.service: ``systemd-analyze verify`` and an offline
  ``systemd-analyze security`` score, plus its settings against the server's defaults.
- deploy/docker/Dockerfile and compose.yaml: no image is built here (no base image
  registry); their instructions are parsed and cross-checked with the serve options.
- deploy/grafana/sipbridge.json and deploy/prometheus/alerts.yml: every metric they query
  exists in the server's Prometheus registry; the rules have Prometheus' structure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer.main
import yaml  # type: ignore[import-untyped]

from sipbridge.api.routes_health import router as health_router
from sipbridge.cli import app
from sipbridge.config import default_db_path, parse_port_range
from sipbridge.runtime.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "sipbridge.service"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "sipbridge.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# The highest `systemd-analyze security` exposure accepted (0 = locked down, 10 = none).
# The unit scores 1.4 on systemd 252 ("OK"); what it leaves open is what a network server
# needs (AF_INET/AF_INET6 sockets, no IP address allow list) or what a codec library may
# need (no MemoryDenyWriteExecute). 2.0 lets the unit lose nothing of substance.
MAX_EXPOSURE = 2.0


def serve_options() -> dict[str, Any]:
    """``sipbridge serve``'s options by their environment variable (SIPBRIDGE_<OPTION>)."""
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {str(param.envvar): param for param in serve.params if param.envvar}


def default(envvar: str) -> Any:
    return serve_options()[envvar].default


def health_paths() -> set[str]:
    return {route.path for route in health_router.routes}  # type: ignore[attr-defined]


# --- systemd -------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def assignments(text: str) -> list[tuple[str, str]]:
    """``A=1 "B=two words"`` (systemd Environment=, Dockerfile ENV) as pairs."""
    pairs = []
    for item in shlex.split(text):
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return pairs


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an executable that exists here (verify checks
    it): the venv's console script when installed, else a stand-in."""
    venv_script = Path(sys.executable).with_name("sipbridge")
    script = str(venv_script) if venv_script.exists() else shutil.which("sipbridge")
    if script is None:
        stand_in = tmp_path / "sipbridge"
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
        script = str(stand_in)
    text = UNIT.read_text()
    assert "ExecStart=/opt/sipbridge/bin/sipbridge serve" in text
    unit = tmp_path / "sipbridge.service"
    unit.write_text(text.replace("ExecStart=/opt/sipbridge/bin/sipbridge", f"ExecStart={script}"))
    return unit


@pytest.mark.requires("systemd-analyze")
def test_the_unit_verifies(verifiable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    complaints = [line for line in result.stderr.splitlines() if "sipbridge.service" in line]
    assert result.returncode == 0 and not complaints, result.stderr


@pytest.mark.requires("systemd-analyze")
def test_the_unit_exposure_stays_low(verifiable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C"},
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_the_unit_matches_the_server() -> None:
    settings = unit_settings(UNIT.read_text())
    one = {key: values[-1] for key, values in settings.items()}
    assert one["User"] == "sipbridge" and one["User"] != "root"
    assert one["EnvironmentFile"] == "-/etc/sipbridge/sipbridge.env"
    assert one["ExecStart"].split()[1:] == ["serve"]
    assert one["Restart"] == "on-failure"
    # The default database of a non-root server in this environment is in StateDirectory.
    environment = {k: v for values in settings["Environment"] for k, v in assignments(values)}
    db = default_db_path(environ=environment, is_root=False)
    assert db.parent == Path("/var/lib") / one["StateDirectory"], db
    # The first SIGTERM drains for at most --drain-timeout: the stop timeout must be longer.
    assert one["KillSignal"] == "SIGTERM"
    assert one["KillMode"] in {"mixed", "process"}
    assert seconds(one["TimeoutStopSec"]) >= float(default("SIPBRIDGE_DRAIN_TIMEOUT")) + 10
    # A few descriptors per call (RTP, RTCP, the agent's WebSocket, SIP over TCP).
    assert int(one["LimitNOFILE"]) >= 8 * int(default("SIPBRIDGE_MAX_CALLS"))
    # No port below 1024 by default, so no capability to bind one.
    assert int(default("SIPBRIDGE_SIP_PORT")) > 1023 and int(default("SIPBRIDGE_HTTP_PORT")) > 1023
    assert parse_port_range(str(default("SIPBRIDGE_RTP_PORTS")))[0] > 1023
    assert one.get("AmbientCapabilities", "") == "" and one["CapabilityBoundingSet"] == ""
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
    }.items():
        assert one.get(key) == value, key
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in settings["SystemCallFilter"]


# --- Docker --------------------------------------------------------------------------


def dockerfile_instructions(stage: int = -1) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one build stage (default: the last, the image)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((word.upper(), rest.strip()))
    return stages[stage]


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile_instructions() if word == name]


def test_the_image_runs_as_a_non_root_user() -> None:
    (base,) = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert base.split()[0] == "python:3.11-slim-bookworm"
    users = instruction("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    user = users[-1].split(":")[0]
    runs = " ".join(instruction("RUN"))
    assert re.search(rf"useradd\b[^&]*\b{user}\b", runs), "the user is not created"
    assert "libopus0" in runs and re.search(r"pip install [^&]*\.whl", runs)


def test_the_image_default_database_is_on_its_volume() -> None:
    env: dict[str, str] = {}
    for rest in instruction("ENV"):
        env.update(assignments(rest))
    db = default_db_path(environ=env, is_root=False)
    volumes = [v for rest in instruction("VOLUME") for v in json.loads(rest)]
    assert str(db.parent) in volumes
    assert {key for key in env if key.startswith("SIPBRIDGE_")} <= set(serve_options())


def test_the_image_exposes_the_server_default_ports() -> None:
    exposed = {port for rest in instruction("EXPOSE") for port in rest.split()}
    sip, http = default("SIPBRIDGE_SIP_PORT"), default("SIPBRIDGE_HTTP_PORT")
    rtp_low, rtp_high = parse_port_range(str(default("SIPBRIDGE_RTP_PORTS")))
    tls = default("SIPBRIDGE_TLS_PORT")
    assert exposed == {
        f"{sip}/udp",
        f"{sip}/tcp",
        f"{tls}/tcp",
        f"{http}/tcp",
        f"{rtp_low}-{rtp_high}/udp",
    }


def test_the_image_health_check_and_stop_signal() -> None:
    (check,) = instruction("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[0] == "python", "curl and wget are not in the slim image"
    paths = re.findall(r"'(/[a-z]+)'", command[-1])
    assert paths and set(paths) <= health_paths() and "/healthz" in paths
    assert str(default("SIPBRIDGE_HTTP_PORT")) in command[-1]
    assert instruction("STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(instruction("ENTRYPOINT")[-1]) == ["sipbridge"]
    assert json.loads(instruction("CMD")[-1]) == ["serve"]


def test_the_compose_file_matches_the_server() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"sipbridge", "postgres"}
    server, postgres = services["sipbridge"], services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert server["network_mode"] == "host"
    assert "network_mode: host" in COMPOSE.read_text() and "RTP" in COMPOSE.read_text()
    env = server["environment"]
    assert set(env) <= set(serve_options()), set(env) - set(serve_options())
    # Host networking: PostgreSQL through its port published on the host's loopback.
    db = env["SIPBRIDGE_DB"]
    assert re.match(r"postgresql(\+asyncpg)?://[^@]+@(127\.0\.0\.1|localhost):5432/", db), db
    assert "127.0.0.1:5432:5432" in postgres["ports"]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The health check asks a health route on the HTTP port the server listens on.
    check = " ".join(server["healthcheck"]["test"])
    port = env.get("SIPBRIDGE_HTTP_PORT", default("SIPBRIDGE_HTTP_PORT"))
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", check)
    assert match and match[1] == str(port) and match[2] in health_paths(), check
    # Longer than the drain: the first SIGTERM lets the calls up finish.
    drain = float(env.get("SIPBRIDGE_DRAIN_TIMEOUT", default("SIPBRIDGE_DRAIN_TIMEOUT")))
    assert server.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(server["stop_grace_period"]) >= drain + 10
    assert "healthcheck" in postgres


# --- Grafana and Prometheus ----------------------------------------------------------


def exposed_metrics() -> dict[str, set[str]]:
    """Every sample name the server's /metrics can serve, with its labels."""
    metrics = Metrics()
    guard = SimpleNamespace(dropped_banned=0, dropped_throttled=0, bans=lambda now: [])
    metrics.watch_guard(guard, lambda: 0.0)  # type: ignore[arg-type]
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_count", "_sum", "_created"],
        "summary": ["_count", "_sum", "_created"],
        "gauge": [""],
    }
    labels: dict[str, set[str]] = {}
    for collector in list(metrics.registry._collector_to_names):
        for family in collector.collect():
            names = set(getattr(collector, "_labelnames", ()))
            for suffix in suffixes[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                labels[family.name + suffix] = names | extra
    return labels


# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
SELECTOR = re.compile(r"\b(sipbridge_[a-z0-9_]+)(\{[^}]*\})?")


# PromQL functions and aggregations the files may use (promtool is not installed: this
# catches a misspelt function, not every syntax error).
FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "topk", "rate", "increase", "irate", "deriv",
    "delta", "histogram_quantile", "clamp_min", "abs", "absent", "vector", "by", "without",
}  # fmt: skip


def check_expression(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """The problems of one PromQL expression: unknown metrics, unknown label matchers,
    unknown functions, unbalanced brackets."""
    problems = []
    for opening, closing in ("()", "[]", "{}"):
        if expr.count(opening) != expr.count(closing):
            problems.append(f"unbalanced {opening}{closing} in {expr!r}")
    for function in re.findall(r"\b([a-z_]+)\s*\(", expr):
        if function not in FUNCTIONS:
            problems.append(f"unknown function {function}")
    found = SELECTOR.findall(expr)
    if not found:
        problems.append(f"no sipbridge metric in {expr!r}")
    for name, matchers in found:
        if name not in metrics:
            problems.append(f"unknown metric {name}")
            continue
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers):
            if label not in metrics[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def test_the_metric_list_is_the_server_one() -> None:
    metrics = exposed_metrics()
    assert "sipbridge_calls_total" in metrics and "sipbridge_active_calls" in metrics
    assert "sipbridge_call_setup_seconds_bucket" in metrics
    assert "sipbridge_bans_active" in metrics  # the guard's collector
    assert metrics["sipbridge_calls_total"] == {"status", "reason"}
    unknown = check_expression("sipbridge_nope_total", metrics)
    assert unknown == ["unknown metric sipbridge_nope_total"]
    assert check_expression('sipbridge_calls_total{trunk="a"}', metrics) == [
        "sipbridge_calls_total has no label trunk"
    ]
    assert check_expression("rat(sipbridge_calls_total[5m])", metrics) == ["unknown function rat"]
    assert check_expression("sum(sipbridge_calls_total", metrics) == [
        "unbalanced () in 'sum(sipbridge_calls_total'"
    ]


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    panels = list(dashboard["panels"])
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))  # rows
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_the_dashboard_queries_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    metrics = exposed_metrics()
    expressions = dashboard_expressions(dashboard)
    problems = [problem for expr in expressions for problem in check_expression(expr, metrics)]
    assert not problems, problems
    used = {name for expr in expressions for name, _ in SELECTOR.findall(expr)}
    for wanted in (
        "sipbridge_active_calls",
        "sipbridge_calls_total",
        "sipbridge_call_setup_seconds_bucket",
        "sipbridge_rtp_packets_lost_total",
        "sipbridge_rtp_jitter_seconds_bucket",
        "sipbridge_media_clock_lag_seconds_bucket",
        "sipbridge_overload_refusals_total",
        "sipbridge_draining",
        "sipbridge_unhealthy",
        "sipbridge_bans_total",
        "sipbridge_trunk_registered",
        "sipbridge_record_spool_depth",
    ):
        assert wanted in used, wanted
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["definition"]
            assert definition.startswith("label_values(")
            assert not check_expression(definition.removeprefix("label_values"), metrics)


def test_the_alert_rules_are_prometheus_rule_groups() -> None:
    rules_file = yaml.safe_load(ALERTS.read_text())
    assert set(rules_file) == {"groups"}
    metrics = exposed_metrics()
    alerts = []
    for group in rules_file["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")"), expr
            if rule["alert"] != "SipbridgeInstanceDown":  # Prometheus' own `up`
                assert not check_expression(expr, metrics), (rule["alert"], expr)
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    text = ALERTS.read_text()
    for wanted in (
        'status="answered"',
        'reason="agent_unreachable"',
        "sipbridge_bans_total",
        "sipbridge_trunk_registered",
        "sipbridge_registration_failures_total",
        "sipbridge_overloaded",
        "sipbridge_unhealthy",
        "sipbridge_record_spool_depth",
    ):
        assert wanted in text, wanted
