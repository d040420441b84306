from __future__ import annotations

import dataclasses
import errno
import ipaddress
import math
import socket
from pathlib import Path
from typing import ClassVar

import pytest

from sipbridge import config
from sipbridge.config import (
    ServeSettings,
    local_ipv4,
    local_ipv6,
    parse_port_range,
    routed_address,
)


def test_defaults() -> None:
    settings = ServeSettings()
    assert settings.sip_host == "0.0.0.0"
    assert settings.sip_port == 5060
    assert (settings.rtp_port_min, settings.rtp_port_max) == (10000, 20000)
    assert settings.public_ip is None
    assert settings.db == "sqlite:///sipbridge.db"
    assert settings.agent_connect_timeout == 5.0
    assert settings.log_level == "info"
    assert settings.default_region is None
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8080


def test_http_and_region_fields() -> None:
    settings = ServeSettings(http_host="0.0.0.0", http_port=9000, default_region="US")
    assert (settings.http_host, settings.http_port, settings.default_region) == (
        "0.0.0.0",
        9000,
        "US",
    )
    with pytest.raises(ValueError, match="http_port 70000 is outside 0-65535"):
        ServeSettings(http_port=70000)
    with pytest.raises(ValueError, match="http_port -1"):
        ServeSettings(http_port=-1)


def test_frozen() -> None:
    settings = ServeSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sip_port = 5070  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10000-20000", (10000, 20000)),
        (" 1-2 ", (1, 2)),
        ("40000-40001", (40000, 40001)),
        ("1024-65535", (1024, 65535)),
    ],
)
def test_parse_port_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10000", "must look like MIN-MAX"),
        ("1-2-3", "must look like MIN-MAX"),
        ("a-b", "two whole numbers"),
        ("10000-", "two whole numbers"),
        ("0-100", "port 0 is outside 1-65535"),
        ("60000-70000", "port 70000 is outside 1-65535"),
        ("20000-10000", "at least 2 ports"),
        ("10000-10000", "at least 2 ports"),
    ],
)
def test_parse_port_range_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_port_range(text)


def test_settings_validate_ports() -> None:
    with pytest.raises(ValueError):
        ServeSettings(rtp_port_min=20000, rtp_port_max=10000)
    with pytest.raises(ValueError):
        ServeSettings(sip_port=70000)
    with pytest.raises(ValueError):
        ServeSettings(agent_connect_timeout=0)
    assert ServeSettings(sip_port=0).sip_port == 0  # ephemeral port, used by tests


def test_advertised_ip_prefers_public_ip() -> None:
    settings = ServeSettings(sip_host="10.0.0.5", public_ip="203.0.113.7")
    assert settings.advertised_ip == "203.0.113.7"


def test_advertised_ip_uses_specific_bind_address() -> None:
    assert ServeSettings(sip_host="10.0.0.5").advertised_ip == "10.0.0.5"
    assert ServeSettings(sip_host="127.0.0.1").advertised_ip == "127.0.0.1"


class RouteProbe:
    """A stand-in UDP socket: ``connect`` only looks the route up (``routes`` maps the
    family to the source address, absent: no route); sending anything fails the test."""

    routes: ClassVar[dict[int, str]] = {}
    connected: ClassVar[list[tuple[object, ...]]] = []

    def __init__(self, family: int, kind: int) -> None:
        assert kind == socket.SOCK_DGRAM
        self.family = family

    def __enter__(self) -> RouteProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def connect(self, address: tuple[object, ...]) -> None:
        RouteProbe.connected.append(address)
        if self.family not in self.routes:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    def getsockname(self) -> tuple[str, int]:
        return self.routes[self.family], 40000

    def send(self, *args: object) -> None:
        raise AssertionError("local address discovery sent a packet")

    sendto = sendall = send


@pytest.fixture
def no_packets(monkeypatch: pytest.MonkeyPatch) -> type[RouteProbe]:
    """Sockets are route probes that never send; no route in either family by default."""
    monkeypatch.setattr(RouteProbe, "routes", {})
    monkeypatch.setattr(RouteProbe, "connected", [])
    monkeypatch.setattr(socket, "socket", RouteProbe)
    return RouteProbe


def test_local_address_is_the_one_that_routes_outward(
    no_packets: type[RouteProbe], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host name resolves to 127.0.0.1 (as on this CI machine) but eth0 routes
    outward: that address is advertised, found by a UDP connect that sends nothing."""
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.0.1")
    monkeypatch.setattr(socket, "gethostbyname_ex", lambda name: ("vm", [], ["127.0.0.1"]))
    no_packets.routes = {socket.AF_INET: "192.0.2.2", socket.AF_INET6: "2001:db8:5::2"}
    assert local_ipv4() == "192.0.2.2"
    assert local_ipv6() == "2001:db8:5::2"
    assert ServeSettings(sip_host="0.0.0.0").advertised_ip == "192.0.2.2"
    assert [address[0] for address in no_packets.connected][:2] == ["198.51.100.1", "2001:db8::1"]
    no_packets.routes = {socket.AF_INET: "127.0.0.1"}  # a route via loopback only: not used
    assert local_ipv4() == "127.0.0.1"


def test_routed_address_on_this_machine() -> None:
    address = routed_address(socket.AF_INET)
    assert address is None or ipaddress.ip_address(address).version == 4


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
@pytest.mark.usefixtures("no_packets")
def test_advertised_ip_for_wildcard_uses_host_address(
    monkeypatch: pytest.MonkeyPatch, wildcard: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pbx")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "192.0.2.10")
    assert ServeSettings(sip_host=wildcard).advertised_ip == "192.0.2.10"


@pytest.mark.parametrize(
    ("sip_host", "public_ip", "ipv6", "expected"),
    [
        # one address: media on it, in its own family only
        ("::1", None, True, ("::1", "::1")),
        ("[::1]", None, True, ("::1", "::1")),
        ("2001:db8::5", "2001:db8::99", True, ("2001:db8::5", "2001:db8::99")),
        ("::1", None, False, None),
        ("127.0.0.1", None, True, None),
        ("127.0.0.1", None, False, ("127.0.0.1", "127.0.0.1")),  # IPv4 as before
        ("10.0.0.5", "203.0.113.7", False, ("10.0.0.5", "203.0.113.7")),
        ("10.0.0.5", "2001:db8::99", False, ("10.0.0.5", "10.0.0.5")),
        # a wildcard (dual-stack): the caller's family, its wildcard, public_ip if it fits
        ("::", None, True, ("::", "2001:db8::20")),
        ("::", None, False, ("0.0.0.0", "192.0.2.10")),
        ("0.0.0.0", None, False, ("0.0.0.0", "192.0.2.10")),
        ("0.0.0.0", None, True, ("::", "2001:db8::20")),
        ("::", "203.0.113.7", False, ("0.0.0.0", "203.0.113.7")),
        ("::", "203.0.113.7", True, ("::", "2001:db8::20")),
        ("::", "2001:db8::99", True, ("::", "2001:db8::99")),
    ],
)
@pytest.mark.usefixtures("no_packets")
def test_media_address_follows_the_callers_family(
    monkeypatch: pytest.MonkeyPatch,
    sip_host: str,
    public_ip: str | None,
    ipv6: bool,
    expected: tuple[str, str] | None,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pbx")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "192.0.2.10")
    addresses = {
        socket.AF_INET6: [("fe80::1%eth0", 0, 0, 2), ("2001:db8::20", 0, 0, 0)],
        socket.AF_INET: [("192.0.2.10", 0)],
    }
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda name, port, family=0, *rest: [(family, 2, 17, "", a) for a in addresses[family]],
    )
    settings = ServeSettings(sip_host=sip_host, public_ip=public_ip)
    assert settings.media_address(ipv6) == expected


@pytest.mark.usefixtures("no_packets")
def test_local_ipv6_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pbx")
    found = [("::1", 0, 0, 0), ("fe80::1", 0, 0, 2), ("::ffff:192.0.2.1", 0, 0, 0)]
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *args: [(socket.AF_INET6, 2, 17, "", a) for a in found]
    )
    assert local_ipv6() == "::1"

    def unresolvable(*args: object) -> None:
        raise socket.gaierror("no such name")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    assert local_ipv6() == "::1"


@pytest.mark.usefixtures("no_packets")
def test_local_ipv4_skips_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian style /etc/hosts maps the host name to 127.0.1.1
    monkeypatch.setattr(socket, "gethostname", lambda: "pbx")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    monkeypatch.setattr(
        socket, "gethostbyname_ex", lambda name: ("pbx", [], ["127.0.1.1", "198.51.100.4"])
    )
    assert local_ipv4() == "198.51.100.4"


@pytest.mark.usefixtures("no_packets")
def test_local_ipv4_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError("no resolver")

    monkeypatch.setattr(socket, "gethostname", lambda: "pbx")
    monkeypatch.setattr(socket, "gethostbyname", fail)
    monkeypatch.setattr(socket, "gethostbyname_ex", fail)
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert local_ipv4() == "127.0.0.1"
    assert ServeSettings().advertised_ip == "127.0.0.1"


@pytest.mark.usefixtures("no_packets")
def test_local_ipv4_real_machine() -> None:
    address = local_ipv4()
    assert config._is_usable_ipv4(address) or address == "127.0.0.1"


def test_codecs_default_prefers_g711_and_validates() -> None:
    from sipbridge.config import DEFAULT_CODECS, parse_codecs

    assert ServeSettings().codecs == DEFAULT_CODECS == ("pcmu", "pcma", "g722", "opus")
    assert parse_codecs(" OPUS, g722,opus ") == ("opus", "g722")
    assert ServeSettings(codecs=("G722",)).codecs == ("g722",)
    with pytest.raises(ValueError, match="unknown codec 'g729'"):
        parse_codecs("pcmu,g729")
    with pytest.raises(ValueError, match="empty"):
        parse_codecs(" , ")
    with pytest.raises(ValueError, match="media_timeout"):
        ServeSettings(media_timeout=0)


def test_access_settings() -> None:
    settings = ServeSettings(public_ip="203.0.113.9")
    assert settings.unknown_sources == "drop"
    assert settings.auth_algorithms == ("SHA-256", "MD5")
    assert settings.realm == "203.0.113.9"  # no software name in the realm
    custom = ServeSettings(
        unknown_sources="403", auth_realm=" voice.example.com ", auth_algorithms=("md5",)
    )
    assert custom.realm == "voice.example.com" and custom.auth_algorithms == ("MD5",)
    with pytest.raises(ValueError, match="unknown_sources"):
        ServeSettings(unknown_sources="404")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth_realm"):
        ServeSettings(auth_realm="a\nb")
    with pytest.raises(ValueError, match="unknown digest algorithm"):
        ServeSettings(auth_algorithms=("SHA-512",))


def test_trusted_proxies_are_validated_and_normalized() -> None:
    assert ServeSettings().trusted_proxies == ()
    settings = ServeSettings(trusted_proxies=("10.0.0.5/32", " 10.1.0.9/29 ", "[::1]"))
    assert settings.trusted_proxies == ("10.0.0.5", "10.1.0.8/29", "::1")
    with pytest.raises(ValueError, match="'proxy' is not an IP address or network"):
        ServeSettings(trusted_proxies=("proxy",))


def test_call_limits_are_validated() -> None:
    assert ServeSettings().max_calls == 1000
    assert ServeSettings().max_call_duration == 4 * 3600.0
    with pytest.raises(ValueError, match="max_calls"):
        ServeSettings(max_calls=0)
    with pytest.raises(ValueError, match="max_call_duration"):
        ServeSettings(max_call_duration=0)


def test_session_timer_settings_are_validated() -> None:
    settings = ServeSettings()
    assert (settings.session_expires, settings.min_se) == (1800, 90)  # on by default
    assert ServeSettings(session_expires=0).session_expires == 0  # off
    assert ServeSettings(session_expires=4, min_se=2).min_se == 2  # tests lower them
    with pytest.raises(ValueError, match="min_se"):
        ServeSettings(min_se=0)
    with pytest.raises(ValueError, match="session_expires"):
        ServeSettings(session_expires=60)


def test_drain_timeout_is_validated() -> None:
    assert ServeSettings().drain_timeout == 300.0
    assert ServeSettings(drain_timeout=0).drain_timeout == 0  # 0: hang up at once
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="drain_timeout"):
            ServeSettings(drain_timeout=bad)


def test_transport_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    settings = ServeSettings(tls_cert=str(cert), tls_key=str(key))
    assert (settings.tcp, settings.tls_port, settings.max_connections_per_source) == (
        True,
        5061,
        32,
    )
    with pytest.raises(ValueError, match="together"):
        ServeSettings(tls_cert=str(cert))
    with pytest.raises(ValueError, match="together"):
        ServeSettings(tls_key=str(key))
    with pytest.raises(ValueError, match=r"tls_key .* cannot be read"):
        ServeSettings(tls_cert=str(cert), tls_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"tls_ca .* cannot be read"):
        ServeSettings(tls_ca=str(tmp_path / "missing-ca.pem"))
    assert ServeSettings(tls_ca=str(cert)).tls_ca == str(cert)
    with pytest.raises(ValueError, match="tls_port"):
        ServeSettings(tls_port=70000)
    with pytest.raises(ValueError, match="max_connections_per_source"):
        ServeSettings(max_connections_per_source=0)
    assert settings.unknown_connection_timeout == 5.0
    with pytest.raises(ValueError, match="unknown_connection_timeout"):
        ServeSettings(unknown_connection_timeout=0)


def test_advertising_loopback_on_all_interfaces_is_warned() -> None:
    settings = ServeSettings(sip_host="0.0.0.0")
    warning = settings.loopback_warning("127.0.0.1")
    assert warning is not None and "--public-ip" in warning and "127.0.0.1" in warning
    assert ServeSettings(sip_host="::").loopback_warning("::1") is not None
    assert settings.loopback_warning("192.0.2.2") is None
    assert settings.loopback_warning("pbx.example.com") is None
    assert ServeSettings(sip_host="127.0.0.1").loopback_warning("127.0.0.1") is None


def test_usable_codecs_leaves_out_or_refuses_what_cannot_run() -> None:
    from sipbridge.config import DEFAULT_CODECS, usable_codecs

    assert usable_codecs(DEFAULT_CODECS, frozenset()) == (DEFAULT_CODECS, None)
    kept, warning = usable_codecs(DEFAULT_CODECS, frozenset({"opus"}))
    assert kept == ("pcmu", "pcma", "g722")
    assert warning is not None and "libopus0" in warning
    assert usable_codecs(("pcmu",), frozenset({"opus"})) == (("pcmu",), None)
    with pytest.raises(ValueError, match="--codecs names opus"):
        usable_codecs(("opus",), frozenset({"opus"}))


def test_default_db_path() -> None:
    home = {"HOME": "/home/ann"}
    assert config.default_db_path(home, is_root=False) == Path(
        "/home/ann/.local/share/sipbridge/sipbridge.db"
    )
    assert config.default_db_path(home, is_root=True) == Path("/var/lib/sipbridge/sipbridge.db")
    xdg = {**home, "XDG_DATA_HOME": "/data"}
    assert config.default_db_path(xdg, is_root=False) == Path("/data/sipbridge/sipbridge.db")
    assert config.default_db_path(xdg, is_root=True) == Path("/data/sipbridge/sipbridge.db")
    relative = {**home, "XDG_DATA_HOME": "data"}  # ignored, as the XDG spec says
    assert config.default_db_path(relative, is_root=False) == Path(
        "/home/ann/.local/share/sipbridge/sipbridge.db"
    )


def test_default_db_path_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert config.default_db_path() == Path("/xdg/sipbridge/sipbridge.db")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    assert config.default_db_path() == Path("/var/lib/sipbridge/sipbridge.db")


def test_instance_id_and_spool_file_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = ServeSettings(sip_port=5070, db=f"sqlite:///{tmp_path / 'calls.db'}")
    assert sqlite.owner_id == f"{socket.gethostname()}:5070"  # the same after a restart
    assert sqlite.spool_file == tmp_path / "calls.db.spool"  # beside the database
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    postgres = ServeSettings(db="postgresql://u:p@db/sipbridge", instance_id="sip 1/a")
    assert postgres.owner_id == "sip 1/a"
    assert postgres.spool_file == tmp_path / "data" / "sipbridge" / "records-sip_1_a.spool"
    memory = ServeSettings(db="sqlite://", instance_id="x")
    assert memory.spool_file.name == "records-x.spool"
    assert ServeSettings(spool_path=str(tmp_path / "s")).spool_file == tmp_path / "s"
    for bad in ("", " ", "a\nb", "x" * 256):
        with pytest.raises(ValueError, match="instance_id"):
            ServeSettings(instance_id=bad)
    with pytest.raises(ValueError, match="spool_max_bytes"):
        ServeSettings(spool_max_bytes=100)


def test_is_ip_address() -> None:
    assert config.is_ip_address("127.0.0.1") and config.is_ip_address("::1")
    assert not config.is_ip_address("localhost") and not config.is_ip_address("[::1]")


def test_settings_instance_timeout() -> None:
    assert ServeSettings().instance_timeout == 30.0
    assert ServeSettings(instance_timeout=1).instance_timeout == 1
    with pytest.raises(ValueError, match="instance_timeout must be at least 1 second"):
        ServeSettings(instance_timeout=0.5)


def test_recordings_folder_and_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recordings go beside a SQLite file, else in the data directory, unless
    --recordings-dir says where; the retention is a number of days, 0 keeping them."""
    sqlite = ServeSettings(db=f"sqlite:///{tmp_path / 'calls.db'}")
    assert sqlite.recordings_path == tmp_path / "recordings"
    assert sqlite.recording_retention_days == 30
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    postgres = ServeSettings(db="postgresql://u:p@db/sipbridge")
    assert postgres.recordings_path == tmp_path / "data" / "sipbridge" / "recordings"
    assert ServeSettings(recordings_dir=str(tmp_path / "r")).recordings_path == tmp_path / "r"
    assert ServeSettings(recording_retention_days=0).recording_retention_days == 0
    for bad in (-1.0, math.inf):
        with pytest.raises(ValueError, match="recording_retention_days"):
            ServeSettings(recording_retention_days=bad)
