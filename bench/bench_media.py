"""Median cost per 20 ms frame of the media engine components (issue 3).

Run: .venv/bin/python bench/bench_media.py

Same method as bench_codecs.py: the median over 200 batches of 100 calls, timing whole
batches so perf_counter's own cost stays out of the figures. Inputs are speech-like
(harmonics with noise), not silence, since codecs are faster on silence.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from sipbridge.codecs import get_codec
from sipbridge.codecs.opus import opus_available
from sipbridge.media.jitter import JitterBuffer
from sipbridge.media.plc import G711Plc
from sipbridge.media.resample import Resampler

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


def speech(rate: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(rate * seconds)) / rate
    wave = sum((5000 / k) * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 12))
    return (np.asarray(wave) + rng.normal(0, 300, len(t))).astype("<i2")


def frame_of(rate: int) -> bytes:
    return speech(rate)[rate // 10 : rate // 10 + rate // 50].tobytes()


def main() -> None:
    results: list[tuple[str, Callable[[], object]]] = []

    g722 = get_codec("g722")
    for rate in (16000, 8000):
        pcm = frame_of(rate)
        encoder, decoder = g722.encoder(rate), g722.decoder(rate)
        payload = encoder.encode(pcm)
        results.append((f"g722 encode ({rate // 1000} kHz PCM)", partial(encoder.encode, pcm)))
        results.append((f"g722 decode ({rate // 1000} kHz PCM)", partial(decoder.decode, payload)))

    if opus_available():
        opus = get_codec("opus")
        for rate in (8000, 16000):
            pcm = frame_of(rate)
            encoder, decoder = opus.encoder(rate), opus.decoder(rate)
            payload = encoder.encode(pcm)
            results.append(
                (f"opus encode ({rate // 1000} kHz, FEC on)", partial(encoder.encode, pcm))
            )
            results.append((f"opus decode ({rate // 1000} kHz)", partial(decoder.decode, payload)))
            results.append(
                (f"opus conceal 20 ms ({rate // 1000} kHz)", partial(decoder.conceal, rate // 50))
            )

    up, down = Resampler(8000, 16000), Resampler(16000, 8000)
    results.append(("resample 8 -> 16 kHz", partial(up.process, frame_of(8000))))
    results.append(("resample 16 -> 8 kHz", partial(down.process, frame_of(16000))))
    same = Resampler(8000, 8000)
    results.append(("resample 8 -> 8 kHz (identity)", partial(same.process, frame_of(8000))))

    pcmu = get_codec("pcmu")
    mu_enc, mu_dec = pcmu.encoder(), pcmu.decoder()
    mu_payload = mu_enc.encode(frame_of(8000))
    up2 = Resampler(8000, 16000)

    def pcmu_to_16k_agent() -> None:
        up2.process(mu_dec.decode(mu_payload))

    results.append(("pcmu decode + resample to 16 kHz", pcmu_to_16k_agent))

    for rate in (8000, 16000):
        plc = G711Plc(rate)
        pcm = frame_of(rate)
        for _ in range(5):
            plc.good(pcm)

        def conceal_then_recover(plc: G711Plc = plc, pcm: bytes = pcm, n: int = rate // 50) -> None:
            plc.conceal(n)
            plc.good(pcm)

        results.append((f"PLC good frame ({rate // 1000} kHz)", partial(plc.good, pcm)))
        results.append((f"PLC conceal 20 ms + recover ({rate // 1000} kHz)", conceal_then_recover))

    buffer = JitterBuffer(8000)
    state = {"seq": 0, "now": 0.0}

    def jitter_push_pop() -> None:
        seq = state["seq"]
        now = state["now"]
        buffer.push(int(seq) & 0xFFFF, (int(seq) * 160) & 0xFFFFFFFF, b"x" * 160, now)
        while buffer.pop(now) is not None:
            pass
        state["seq"] = seq + 1
        state["now"] = now + 0.02

    results.append(("jitter buffer push + drain", jitter_push_pop))

    # SRTP (rtp/srtp.py): one PCMU packet (12 + 160 bytes) protected, and one unprotected
    # by the other end; every call gets a packet of its own (libsrtp refuses replays).
    import secrets

    from sipbridge.rtp.srtp import SrtpSession
    from sipbridge.rtp.stream import RtpSender

    count = (BATCHES + 1) * BATCH_SIZE
    for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"):
        ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
        tx, rx = SrtpSession(suite, ours, theirs), SrtpSession(suite, theirs, ours)
        peer = SrtpSession(suite, ours, theirs)  # a second sender under our key, for rx
        sender = RtpSender(
            ssrc=1, payload_type=0, samples_per_frame=160, initial_sequence=0, initial_timestamp=0
        )
        to_protect = iter([sender.packet(mu_payload) for _ in range(count)])
        to_unprotect = iter([peer.protect(sender.packet(mu_payload)) or b"" for _ in range(count)])

        def protect(tx: SrtpSession = tx, packets: Iterator[bytes] = to_protect) -> None:
            if tx.protect(next(packets)) is None:
                raise AssertionError("protect failed")

        def unprotect(rx: SrtpSession = rx, packets: Iterator[bytes] = to_unprotect) -> None:
            if rx.unprotect(next(packets)) is None:
                raise AssertionError("unprotect failed")

        short = suite[-2:]
        results.append((f"SRTP protect, PCMU packet (SHA1_{short})", protect))
        results.append((f"SRTP unprotect, PCMU packet (SHA1_{short})", unprotect))

    print(f"median µs per 20 ms frame ({BATCHES} x {BATCH_SIZE} calls each)")
    for label, call in results:
        print(f"  {label:<42} {median_us(call):8.2f}")


if __name__ == "__main__":
    main()
