"""Server settings for tests: everything on 127.0.0.1, ephemeral SIP and HTTP ports."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipbridge.config import ServeSettings

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

# ``make_bridge(**overrides)`` from the ``make_bridge`` fixture (tests/conftest.py).
BridgeFactory = Callable[..., Awaitable["SipBridgeServer"]]


def loopback_settings(
    db_file: Path, *, rtp_ports: int = 100, rtp_low: int | None = None, **overrides: Any
) -> ServeSettings:
    """SIP and HTTP on ephemeral 127.0.0.1 ports (``sip_host`` may move SIP, e.g. to ::1),
    a random even RTP range of ``rtp_ports`` ports (or from ``rtp_low``), an SQLite file
    at ``db_file``."""
    low = rtp_low if rtp_low is not None else random.randrange(40000, 59000, 2)
    values: dict[str, Any] = {
        "sip_host": "127.0.0.1",
        "sip_port": 0,
        "http_port": 0,
        "db": f"sqlite:///{db_file}",
    }
    values.update(overrides)  # sip_host ::1 for the IPv6 tests, db for PostgreSQL
    return ServeSettings(rtp_port_min=low, rtp_port_max=low + rtp_ports, **values)
