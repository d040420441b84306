"""Before ``serve`` starts (and in ``sipbridge doctor``): can each listening socket be bound?
A port in use or an address this host does not have becomes one line saying which option
to change, not a traceback."""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass

__all__ = ["BindResult", "Listener", "bind_each", "listen_problem"]


@dataclass(frozen=True)
class Listener:
    """One socket ``serve`` will listen on, and the options that choose it."""

    what: str  # "SIP over UDP"
    host: str
    port: int
    host_option: str
    port_option: str
    udp: bool = False

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _explain(listener: Listener, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        reason = (
            f"port {listener.port} is already in use (stop the program using it, "
            f"or choose another {listener.port_option})"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = (
            f"this host has no address {listener.host} (give {listener.host_option} one of "
            "its own addresses, or 0.0.0.0 for all)"
        )
    elif exc.errno == errno.EACCES:
        reason = (
            f"permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; "
            f"or choose another {listener.port_option})"
        )
    else:
        reason = exc.strerror or str(exc)
    return f"cannot listen for {listener.what} on {listener.endpoint}: {reason}"


def listen_problem(listeners: list[Listener]) -> str | None:
    """Bind every listener (all at once, so two of them on one port clash too) and close
    them again; the first failure explained, or None when all of them can be bound."""
    for result in bind_each(listeners, stop_at_first=True):
        if result.problem is not None:
            return result.problem
    return None


@dataclass(frozen=True)
class BindResult:
    """Whether one listener could be bound: ``problem`` explains why not (None: it could),
    ``errno`` is the error's (``errno.EADDRINUSE``: another socket holds the port)."""

    listener: Listener
    problem: str | None = None
    errno: int | None = None


def bind_each(listeners: list[Listener], *, stop_at_first: bool = False) -> list[BindResult]:
    """Bind the listeners together (two of them on one port clash) and close them again;
    one result each. With ``stop_at_first``, the list ends at the first failure."""
    results: list[BindResult] = []
    with contextlib.ExitStack() as stack:
        for listener in listeners:
            result = _bind(stack, listener)
            results.append(result)
            if result.problem is not None and stop_at_first:
                break
    return results


def _bind(stack: contextlib.ExitStack, listener: Listener) -> BindResult:
    kind = socket.SOCK_DGRAM if listener.udp else socket.SOCK_STREAM
    host = listener.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, listener.port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        problem = (
            f"cannot listen for {listener.what} on {listener.endpoint}: "
            f"{exc.strerror} (check {listener.host_option})"
        )
        return BindResult(listener, problem)
    family, sock_type, proto, _, address = infos[0]
    sock = stack.enter_context(socket.socket(family, sock_type, proto))
    if not listener.udp:  # as asyncio's create_server: TIME_WAIT is no clash
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        if not listener.udp:  # only a listening socket makes a later bind fail
            sock.listen(1)
    except OSError as exc:
        return BindResult(listener, _explain(listener, exc), exc.errno)
    return BindResult(listener)
