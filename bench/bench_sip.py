"""Cost of the SIP core per message: parsing, a whole OPTIONS ping through the UA, and
the flood guard's check that every datagram meets before parsing.

Run: .venv/bin/python bench/bench_sip.py

Each figure is the median over 200 batches of 50 calls, in microseconds per message.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from sipbridge.sip.guard import GuardLimits, SourceGuard
from sipbridge.sip.message import parse_message
from sipbridge.sip.ua import UserAgent

BATCHES = 200
BATCH_SIZE = 50

INVITE = (
    b"INVITE sip:+12025550101@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=1SIPpTag001\r\n"
    b"To: <sip:+12025550101@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-7820@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 129\r\n\r\n"
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
)


def options(n: int) -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-opt-{n}\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def median_us(make_batch: Callable[[], Callable[[], object]]) -> float:
    samples = []
    for _ in range(BATCHES):
        run = make_batch()
        start = time.perf_counter()
        for _ in range(BATCH_SIZE):
            run()
        samples.append((time.perf_counter() - start) / BATCH_SIZE * 1e6)
    return statistics.median(samples)


def main() -> None:
    print("median µs per message (200 x 50)")
    print(
        f"  {'parse INVITE with SDP':<40} {median_us(lambda: lambda: parse_message(INVITE)):8.1f}"
    )

    counter = iter(range(10**9))
    ua = UserAgent("127.0.0.1", 5060)

    def ping() -> None:
        ua.receive_datagram(options(next(counter)), ("127.0.0.1", 5061), 0.0)
        ua.datagrams_to_send()
        ua.events()

    print(f"  {'OPTIONS in, 200 out (UA core)':<40} {median_us(lambda: ping):8.1f}")

    # What the runtime does after every message: ua.get_timer() to re-arm its one timer.
    # A busy server holds thousands of transactions (RFC 6026 Accepted and Timer J/K
    # lasting 32 s each): at 50 calls/s, about 3,000.
    busy = UserAgent("127.0.0.1", 5060)
    for n in range(3000):
        busy.receive_datagram(options(10**8 + n), ("127.0.0.1", 5061), float(n) / 100)
    busy.datagrams_to_send()

    def ping_and_rearm() -> None:
        busy.receive_datagram(options(next(counter)), ("127.0.0.1", 5061), 30.0)
        busy.datagrams_to_send()
        busy.events()
        busy.get_timer()

    rearm = median_us(lambda: ping_and_rearm)
    print(f"  {'OPTIONS + get_timer, 3,000 transactions':<40} {rearm:8.1f}")

    # The flood guard runs for every datagram before parsing (sip/guard.py).
    guard = SourceGuard(GuardLimits(rate=1e9, burst=10**9))
    guard.ban("198.51.100.7", "flood", 0.0, duration=None)
    clock = iter(range(10**9))
    print(
        f"  {'guard: datagram from a banned source':<40} "
        f"{median_us(lambda: lambda: guard.admit('198.51.100.7', 1.0)):8.2f}"
    )
    print(
        f"  {'guard: datagram admitted (token bucket)':<40} "
        f"{median_us(lambda: lambda: guard.admit('192.0.2.1', next(clock) * 1e-3)):8.2f}"
    )


if __name__ == "__main__":
    main()
