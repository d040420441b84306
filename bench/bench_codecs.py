"""Median cost per 20 ms frame of the media hot paths.

Run: .venv/bin/python bench/bench_codecs.py

Each figure is the median over 200 batches of 100 calls (20,000 calls in all); timing a
batch rather than each call keeps perf_counter's own cost out of sub-microsecond figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from sipbridge.agent import AgentSession
from sipbridge.codecs import get_codec
from sipbridge.rtp import RtpSender, parse_rtp_header

BATCHES = 200
BATCH_SIZE = 100


def median_us(call: Callable[[], object]) -> float:
    for _ in range(BATCH_SIZE):  # warm-up
        call()
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(BATCH_SIZE):
            call()
        samples.append((time.perf_counter() - start) / BATCH_SIZE)
    return statistics.median(samples) * 1e6


def main() -> None:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-20000, 20000, 160, dtype=np.int16).astype("<i2").tobytes()
    payload = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
    sender = RtpSender(0x12345678, 0, initial_sequence=1, initial_timestamp=2)
    packet = sender.packet(payload)
    session = AgentSession("bench")

    def agent_round() -> None:
        session.receive_binary(pcm)
        session.next_frame()

    results: list[tuple[str, Callable[[], object]]] = []
    for name in ("pcmu", "pcma"):
        info = get_codec(name)
        encoder, decoder = info.encoder(), info.decoder()
        results.append((f"{name} encode 160 samples", partial(encoder.encode, pcm)))
        results.append((f"{name} decode 160 bytes", partial(decoder.decode, payload)))
    results.append(("parse_rtp_header", partial(parse_rtp_header, packet)))
    results.append(("RtpSender.packet", partial(sender.packet, payload)))
    results.append(("AgentSession receive_binary+next_frame", agent_round))

    print(f"median µs per 20 ms frame ({BATCHES} x {BATCH_SIZE} calls each)")
    for label, call in results:
        print(f"  {label:<42} {median_us(call):7.3f}")


if __name__ == "__main__":
    main()
