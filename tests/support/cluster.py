"""What the cluster tests share: the Kamailio binary and a SIP OPTIONS probe."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time

__all__ = ["KAMAILIO", "answers_options"]

# /usr/sbin is not on every user's PATH.
KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")


async def answers_options(port: int, timeout: float, *, any_final: bool = False) -> None:
    """Wait until something on 127.0.0.1:``port`` answers an OPTIONS with a 2xx (any
    response with ``any_final``: a user agent that answers 404 to an OPTIONS naming no
    user, as baresip does)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    n = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        local = sock.getsockname()[1]
        while time.monotonic() < deadline:
            n += 1
            request = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-probe{n}\r\n"
                f"From: <sip:probe@127.0.0.1:{local}>;tag=p{n}\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{n}-{local}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(request, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.3)
                if data.startswith(b"SIP/2.0 2" if not any_final else b"SIP/2.0 "):
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing answered OPTIONS on 127.0.0.1:{port} within {timeout} s")
