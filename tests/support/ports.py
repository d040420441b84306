"""Port numbers for what a test starts and binds later (SIPp, Kamailio, baresip, a server
in a subprocess).

A probed port is free only until somebody else binds it. Probing with ``bind(0)`` hands out
numbers from the kernel's ephemeral range (``net.ipv4.ip_local_port_range``, 32768-60999 by
default), the range every outgoing connection and every other ``bind(0)`` on the machine
draws from: between the probe and the tool's own bind, the number can be taken (a CI run
failed that way). These ports come from below that range instead, where the kernel hands out
nothing, walking forward from a random start so that tests in one process never get the same
number twice and two processes rarely do; each is checked free for UDP and TCP.
"""

from __future__ import annotations

import random
import socket

LOW = 10000
HIGH = 32000  # below the kernel's ephemeral range

_cursor = random.randrange(LOW, HIGH)


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1, *, host: str = "127.0.0.1", even: bool = False) -> int:
    """The first of ``count`` consecutive ports free on ``host`` for UDP and TCP (even
    when ``even``: an RTP port)."""
    global _cursor
    for _ in range(2000):
        port = _cursor
        _cursor += count + (1 if even and count % 2 else 0)
        if _cursor + count >= HIGH:
            _cursor = LOW
        if even and port % 2:
            port += 1
        if port + count >= HIGH:
            continue
        if all(_free(host, port + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} free ports on {host} in {LOW}-{HIGH}")


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on ``host`` for UDP and TCP."""
    return free_ports(1, host=host)
