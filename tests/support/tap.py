"""Watch a running ``SipBridgeServer`` per source address: what arrived on its SIP socket,
what got past the flood/ban guard into the SIP core, and what it answered.

The server's own objects are wrapped on the instance (nothing in src/ is changed):
``server.receive`` sees every datagram before the guard, ``server.ua.receive_datagram``
only those the guard admitted, ``server.ua.datagrams_to_send`` every message the core
produced. A message a trusted proxy relayed arrives from the proxy's address but reaches
the core as its real source's (the address its X-Sipbridge-Source names, sip/proxy.py).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HostTraffic:
    arrived: int = 0  # datagrams read from the SIP socket (before the guard)
    reached_core: int = 0  # datagrams the guard let through to the UA core
    core_data: list[bytes] = field(default_factory=list)  # those datagrams
    answered: list[bytes] = field(default_factory=list)  # first lines of what we sent it
    first_arrival: float | None = None  # wall clock (time.time())
    last_arrival: float | None = None
    last_reached_core: float | None = None


class SourceTap:
    """Per-host traffic of one server (``hosts[ip]``)."""

    def __init__(self, server: Any) -> None:
        self.hosts: collections.defaultdict[str, HostTraffic] = collections.defaultdict(HostTraffic)
        receive = server.receive
        core = server.ua.receive_datagram
        outbox = server.ua.datagrams_to_send

        def tapped_receive(data: bytes, addr: Any) -> None:
            traffic = self.hosts[addr[0]]
            now = time.time()
            traffic.arrived += 1
            if traffic.first_arrival is None:
                traffic.first_arrival = now
            traffic.last_arrival = now
            receive(data, addr)

        def tapped_core(data: bytes, source: Any, now: float, relayed: Any = None) -> Any:
            origin = relayed.origin if relayed is not None else None
            traffic = self.hosts[(origin or source)[0]]
            traffic.reached_core += 1
            traffic.core_data.append(data)
            traffic.last_reached_core = time.time()
            return core(data, source, now, relayed)

        def tapped_outbox() -> Any:
            out = outbox()
            for data, destination in out:
                self.hosts[destination[0]].answered.append(data.split(b"\r\n", 1)[0])
            return out

        server.receive = tapped_receive
        server.ua.receive_datagram = tapped_core
        server.ua.datagrams_to_send = tapped_outbox

    def __getitem__(self, host: str) -> HostTraffic:
        return self.hosts[host]
