import random

import pytest

from sipbridge.media.jitter import Frame, JitterBuffer, JitterEvent, Lost

PTIME = 160  # 20 ms at 8 kHz


def drain(buffer: JitterBuffer, now: float) -> list[JitterEvent]:
    events = []
    while (event := buffer.pop(now)) is not None:
        events.append(event)
    return events


def simulate(
    buffer: JitterBuffer,
    packets: list[tuple[int, int, float]],
    *,
    ssrcs: list[int] | None = None,
    tick: float = 0.020,
    tick_phase: float = 0.007,
) -> list[tuple[float, JitterEvent]]:
    """Feed (seq, ts, arrival) packets as a runtime would: push + drain per packet, and a
    drain every 20 ms tick. Returns (time, event) in order."""
    out: list[tuple[float, JitterEvent]] = []
    order = sorted(range(len(packets)), key=lambda i: packets[i][2])
    end = max(p[2] for p in packets) + 0.2
    next_tick = tick_phase
    for i in [*order, None]:
        arrival = packets[i][2] if i is not None else end
        while next_tick <= arrival:
            out += [(next_tick, e) for e in drain(buffer, next_tick)]
            next_tick += tick
        if i is None:
            break
        seq, ts, _ = packets[i]
        ssrc = ssrcs[i] if ssrcs else None
        buffer.push(
            seq & 0xFFFF, ts & 0xFFFFFFFF, seq.to_bytes(8, "big", signed=True), arrival, ssrc=ssrc
        )
        out += [(arrival, e) for e in drain(buffer, arrival)]
    return out


def stream(
    count: int, *, seq0: int = 1000, ts0: int = 5000, ptime: int = PTIME, rate: int = 8000
) -> list[tuple[int, int, float]]:
    return [(seq0 + i, ts0 + i * ptime, 1.0 + i * ptime / rate) for i in range(count)]


def frames(events: list[tuple[float, JitterEvent]]) -> list[int]:
    return [
        int.from_bytes(e.payload, "big", signed=True) for _, e in events if isinstance(e, Frame)
    ]


def covered(events: list[tuple[float, JitterEvent]]) -> int:
    return sum(e.duration for _, e in events if isinstance(e, Frame | Lost))


def test_clean_network_releases_each_packet_on_arrival() -> None:
    buffer = JitterBuffer(8000)
    packets = stream(50)
    events = simulate(buffer, packets)
    assert [e for _, e in events if isinstance(e, Frame)] == [
        Frame(seq.to_bytes(8, "big", signed=True), seq, ts, PTIME) for seq, ts, _ in packets
    ] + []
    # Every frame left at its own arrival time: nothing added (at most one tick anyway).
    frame_times = [t for t, e in events if isinstance(e, Frame)]
    assert frame_times == [arrival for _, _, arrival in packets]
    lost_events = [e for _, e in events if isinstance(e, Lost)]
    # After the stream ends the buffer conceals (underrun), no sequence numbers lost.
    assert all(e.count == 0 for e in lost_events)
    assert buffer.lost == 0 and buffer.late == 0 and buffer.duplicates == 0
    assert buffer.delay_ms == pytest.approx(5.0)


def test_reordered_packet_waits_for_its_turn() -> None:
    # A packet overtaken by the next one is at least a packet time late: the buffer
    # waits for it once measured jitter (here the minimum depth) covers that.
    buffer = JitterBuffer(8000, min_delay_ms=30)
    buffer.push(1, 0, b"a", 1.000)
    assert drain(buffer, 1.000) == [Frame(b"a", 1, 0, PTIME)]
    buffer.push(3, 320, b"c", 1.040)
    assert drain(buffer, 1.040) == []  # 2 may still come
    buffer.push(2, 160, b"b", 1.041)
    assert drain(buffer, 1.041) == [Frame(b"b", 2, 160, PTIME), Frame(b"c", 3, 320, PTIME)]
    assert buffer.lost == 0


def test_loss_is_declared_at_the_deadline_with_the_next_payload() -> None:
    buffer = JitterBuffer(8000)
    buffer.push(1, 0, b"a", 1.000)
    buffer.push(3, 320, b"c", 1.040)
    assert drain(buffer, 1.000) == [Frame(b"a", 1, 0, PTIME)]
    assert buffer.next_deadline() == pytest.approx(1.025)
    assert drain(buffer, 1.024) == []
    assert drain(buffer, 1.026) == [Lost(1, PTIME, b"c"), Frame(b"c", 3, 320, PTIME)]
    assert buffer.lost == 1
    buffer.push(2, 160, b"b", 1.05)  # too late now
    assert buffer.late == 1
    assert drain(buffer, 1.05) == []


def test_burst_loss_is_declared_packet_by_packet() -> None:
    buffer = JitterBuffer(8000)
    buffer.push(1, 0, b"a", 1.0)
    buffer.push(5, 640, b"e", 1.08)
    drain(buffer, 1.0)
    assert drain(buffer, 1.03) == [Lost(1, PTIME, None)]
    assert drain(buffer, 1.06) == [Lost(1, PTIME, None)]
    assert drain(buffer, 1.07) == [Lost(1, PTIME, b"e"), Frame(b"e", 5, 640, PTIME)]
    assert buffer.lost == 3


def test_duplicates_are_dropped() -> None:
    buffer = JitterBuffer(8000)
    buffer.push(1, 0, b"a", 1.0)
    buffer.push(2, 160, b"b", 1.02)  # waits behind nothing: released below
    buffer.push(2, 160, b"b", 1.021)
    assert buffer.duplicates == 1
    assert len(drain(buffer, 1.021)) == 2
    buffer.push(2, 160, b"b", 1.03)  # after its release: too late
    assert buffer.late == 1
    assert drain(buffer, 1.03) == []


@pytest.mark.parametrize(("seq0", "ts0"), [(65530, 0xFFFFFF00), (0, 0), (32767, 0x7FFFFFF0)])
def test_sequence_and_timestamp_wrap_around(seq0: int, ts0: int) -> None:
    buffer = JitterBuffer(8000)
    packets = stream(20, seq0=seq0, ts0=ts0)
    events = simulate(buffer, packets)
    got = [e for _, e in events if isinstance(e, Frame)]
    assert [f.sequence for f in got] == [(seq0 + i) & 0xFFFF for i in range(20)]
    assert [f.timestamp for f in got] == [(ts0 + i * PTIME) & 0xFFFFFFFF for i in range(20)]
    assert buffer.lost == buffer.late == buffer.restarts == 0


@pytest.mark.parametrize("ptime_ms", [10, 20, 30, 40])
def test_packet_times(ptime_ms: int) -> None:
    ptime = 8 * ptime_ms
    buffer = JitterBuffer(8000)
    packets = stream(40, ptime=ptime)
    del packets[17]
    events = simulate(buffer, packets)
    assert buffer.ptime == ptime
    got = frames(events)
    assert got == [1000 + i for i in range(40) if i != 17]
    # On a clean network the gap is past its deadline before the next packet arrives:
    # one packet time concealed as an underrun, then the number given up.
    between = [e for _, e in events[got.index(1016) :] if isinstance(e, Lost)]
    assert sum(e.duration for e in between[:1]) == ptime
    assert buffer.lost == 1
    timeline = [e for _, e in events if isinstance(e, Frame | Lost)]
    start = next(i for i, e in enumerate(timeline) if isinstance(e, Frame) and e.sequence == 1016)
    end = next(i for i, e in enumerate(timeline) if isinstance(e, Frame) and e.sequence == 1018)
    assert sum(e.duration for e in timeline[start:end]) == 2 * ptime


def test_jitter_loss_and_reordering_keep_the_time_line_continuous() -> None:
    rng = random.Random(7)
    buffer = JitterBuffer(8000)
    packets = []
    for i in range(1500):
        if rng.random() < 0.03:
            continue  # lost
        delay = rng.uniform(0.0, 0.025)  # up to 25 ms of jitter: reorders too
        packets.append((2000 + i, 100 + i * PTIME, 1.0 + i * 0.02 + delay))
        if rng.random() < 0.02:
            packets.append((2000 + i, 100 + i * PTIME, 1.0 + i * 0.02 + delay + 0.001))
    events = simulate(buffer, packets)
    got = frames(events)
    assert got == sorted(got) and len(set(got)) == len(got)  # in order, no duplicates
    sent = {seq for seq, _, _ in packets}
    assert len(got) >= 0.97 * len(sent)  # almost nothing given up as late
    # The time line has no hole and no overlap: frames + concealment cover every 20 ms
    # from the first packet to the last, and then the underrun tail.
    timeline = 0
    for _, event in events:
        timeline += event.duration
    assert timeline >= 1500 * PTIME
    assert 5.0 < buffer.delay_ms <= 60.0
    assert buffer.jitter_ms > 3
    assert buffer.duplicates + buffer.late >= 1


def test_depth_never_exceeds_60_ms() -> None:
    buffer = JitterBuffer(8000)
    rng = random.Random(3)
    packets = [(i, i * PTIME, 1.0 + i * 0.02 + rng.uniform(0, 0.3)) for i in range(300)]
    simulate(buffer, packets)
    assert buffer.delay_ms == 60.0
    with pytest.raises(ValueError):
        JitterBuffer(8000, max_delay_ms=80)
    with pytest.raises(ValueError):
        JitterBuffer(0)


def test_silence_suppression_pause_keeps_sequence_open() -> None:
    buffer = JitterBuffer(8000)
    first = stream(10)
    # 300 ms of silence: the sender stops, timestamps move on, sequence numbers do not.
    second = [
        (1010 + i, 5000 + (10 + 15 + i) * PTIME, 1.0 + (10 + 15 + i) * 0.02) for i in range(10)
    ]
    events = simulate(buffer, first + second)
    assert frames(events) == list(range(1000, 1020))
    pause = [e for t, e in events if isinstance(e, Lost) and 1.2 <= t < 1.5]
    assert pause and all(e.count == 0 for e in pause)
    assert buffer.lost == 0 and buffer.late == 0


def test_timestamp_gap_without_waiting_is_filled() -> None:
    buffer = JitterBuffer(8000)
    buffer.push(1, 0, b"a", 1.0)
    buffer.push(2, 160, b"b", 1.02)
    buffer.push(3, 320 + 800, b"c", 1.04)  # 100 ms of suppressed silence, sent early
    assert drain(buffer, 1.04) == [
        Frame(b"a", 1, 0, PTIME),
        Frame(b"b", 2, 160, PTIME),
        Lost(0, 800, b"c"),
        Frame(b"c", 3, 1120, PTIME),
    ]
    assert buffer.ptime == PTIME


def test_delay_step_recovers() -> None:
    buffer = JitterBuffer(8000)
    packets = [(i, i * PTIME, 1.0 + i * 0.02 + (0.25 if i >= 50 else 0.0)) for i in range(150)]
    events = simulate(buffer, packets)
    got = frames(events)
    # The packets whose time was concealed during the step are dropped, then all flow.
    assert got[:50] == list(range(50))
    assert got[-80:] == list(range(70, 150))
    assert buffer.late <= 15


def test_ssrc_change_restarts() -> None:
    buffer = JitterBuffer(8000)
    a = stream(10)
    b = [(7, 999_000 + i * PTIME, a[-1][2] + 0.02 * (i + 1)) for i in range(10)]
    b = [(7 + i, ts, t) for i, (_, ts, t) in enumerate(b)]
    events = simulate(buffer, a + b, ssrcs=[1] * 10 + [2] * 10)
    assert frames(events) == list(range(1000, 1010)) + list(range(7, 17))
    assert buffer.restarts == 1


def test_timestamp_jump_restarts() -> None:
    buffer = JitterBuffer(8000)
    a = stream(10)
    b = [(1010 + i, 5000 + 10 * 8000 + i * PTIME, a[-1][2] + 0.02 * (i + 1)) for i in range(10)]
    events = simulate(buffer, a + b)
    assert frames(events) == list(range(1000, 1020))
    assert buffer.restarts == 1
    assert all(e.duration <= 4 * PTIME for _, e in events)


def test_sequence_restart_needs_two_packets() -> None:
    buffer = JitterBuffer(8000)
    buffer.push(100, 0, b"a", 1.0)
    drain(buffer, 1.0)
    buffer.push(40000, 160, b"x", 1.02)  # a stray: dropped
    assert drain(buffer, 1.02) == []
    assert buffer.late == 1
    buffer.push(40000, 160, b"x", 1.02)
    buffer.push(40001, 320, b"y", 1.04)  # confirmed: a new sequence
    assert [e.payload for e in drain(buffer, 1.04) if isinstance(e, Frame)] == [b"y"]
    assert buffer.restarts == 1


def test_opus_clock_and_empty_buffer() -> None:
    buffer = JitterBuffer(48000)
    assert buffer.pop(0.0) is None
    assert buffer.next_deadline() is None
    assert buffer.queued == 0
    buffer.push(1, 0, b"a", 0.0)
    buffer.push(2, 960, b"b", 0.02)
    assert [e.duration for e in drain(buffer, 0.02)] == [960, 960]
    assert buffer.ptime == 960


@pytest.mark.parametrize("seed", range(6))
def test_push_next_releases_exactly_what_push_and_pop_would(seed: int) -> None:
    """The fast path (an in-order packet handed back at once) must not change a single
    event: same frames, same losses, same order, through loss, reordering, duplicates,
    jitter, silence suppression and a sequence restart."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, int, int]] = []
    for n in range(400):
        if rng.random() < 0.05:
            continue  # lost
        ts = n * 160 + (8000 if n >= 200 else 0)  # one second of silence suppression
        seq = n if n < 300 else n + 20000  # a sequence restart
        at = n * 0.02 + rng.uniform(0, 0.03)
        arrivals.append((at, seq & 0xFFFF, ts))
        if rng.random() < 0.03:
            arrivals.append((at + 0.001, seq & 0xFFFF, ts))  # duplicate
    arrivals.sort()

    fast_releases = 0

    def run(fast: bool) -> list[object]:
        nonlocal fast_releases
        buffer = JitterBuffer(8000, min_delay_ms=20.0)
        events: list[object] = []
        tick = 0.0
        for at, seq, ts in arrivals:
            while tick + 0.02 <= at:
                tick += 0.02
                while (event := buffer.pop(tick)) is not None:
                    events.append(event)
            payload = f"{seq}".encode()
            if fast:
                released = buffer.push_next(seq, ts, payload, at)
                if released is not None:
                    fast_releases += 1
                    events.append(("frame", released))
            else:
                buffer.push(seq, ts, payload, at)
            while (event := buffer.pop(at)) is not None:
                events.append(event)
        return [("frame", e.payload) if isinstance(e, Frame) else e for e in events]

    assert run(True) == run(False)
    assert fast_releases > 100  # the fast path was taken most of the time
