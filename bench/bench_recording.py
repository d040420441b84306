"""What recording a call costs in CPU: the media path's appends plus the writer thread's
placing and writing, per call, as a share of one core.

Run:

    .venv/bin/python bench/bench_recording.py --calls 100 --seconds 10
    .venv/bin/python bench/bench_recording.py --calls 100 --seconds 10 --rate 16000

It drives the real code (``runtime/recordings.py``: ``CallRecording`` taps and one
``RecordingWriter`` with its thread and real files in a temporary folder) the way a call
does, in real time on an asyncio loop: every 20 ms each call hands one 20 ms chunk of
caller PCM and one agent frame to its tap. The same loop runs twice, once with the taps
and once without (the chunks made and dropped the same way), and the process CPU time
(every thread) of each run is compared: the difference is what recording costs. CPU time,
not wall time, so other load on the machine changes the figure little. Compare it with
``server_cpu_percent_per_call`` of ``bench_capacity.py`` (what a whole call costs);
``bench_capacity.py --record`` measures both together, on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from sipbridge.runtime.recordings import RecordingWriter  # noqa: E402
from sipbridge.store.records import utcnow  # noqa: E402


async def run(calls: int, seconds: float, rate: int, record: bool, folder: Path) -> float:
    """Process CPU seconds of ``seconds`` of ``calls`` calls, recorded or not."""
    loop = asyncio.get_running_loop()
    writer = RecordingWriter(folder)
    samples = rate // 50
    rng = np.random.default_rng(1)
    caller = [rng.integers(-8000, 8000, samples, dtype="<i2").tobytes() for _ in range(50)]
    agent = [rng.integers(-8000, 8000, samples, dtype="<i2").tobytes() for _ in range(50)]
    start = loop.time()
    taps = (
        [writer.begin(f"bench-{n}", rate, start, utcnow()) for n in range(calls)] if record else []
    )
    sink: list[bytes] = []
    cpu0 = time.process_time()
    frames = int(seconds * 50)
    for index in range(frames):
        now = loop.time()
        a, b = caller[index % 50], agent[index % 50]
        if record:
            for tap in taps:
                tap.caller(now, a)
                tap.agent(now, b)
        else:
            for _ in range(calls):
                sink.append(a)
                sink.append(b)
            sink.clear()
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))
    for tap in taps:
        await writer.finish(tap)
    cpu = time.process_time() - cpu0
    dropped = writer.dropped_bytes
    await writer.close()
    if dropped:
        print(f"warning: the writer dropped {dropped} bytes (the disk did not keep up)")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--folder", type=Path, help="write here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-recording-"))
    try:
        off = asyncio.run(run(args.calls, args.seconds, args.rate, False, folder))
        on = asyncio.run(run(args.calls, args.seconds, args.rate, True, folder))
        written = sum(f.stat().st_size for f in folder.rglob("*.wav"))
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    call_seconds = args.calls * args.seconds
    per_call = 100 * (on - off) / call_seconds
    print(f"{'calls':>36}: {args.calls}")
    print(f"{'seconds':>36}: {args.seconds}")
    print(f"{'rate':>36}: {args.rate}")
    print(f"{'cpu without recording, s':>36}: {off:.3f}")
    print(f"{'cpu with recording, s':>36}: {on:.3f}")
    print(f"{'recording cpu, % of a core per call':>36}: {per_call:.4f}")
    print(f"{'written, MB':>36}: {written / 1e6:.1f}")


if __name__ == "__main__":
    main()
