"""A minimal native-protocol agent: greets the caller with a tone, then echoes their audio.

Run:  .venv/bin/python examples/echo_agent.py --port 8765   (the venv sipbridge is installed in)
Then: sipbridge agent add echo --url ws://127.0.0.1:8765
      sipbridge number add +12025550101 --agent echo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import struct

from websockets.asyncio.server import ServerConnection, serve

log = logging.getLogger("echo_agent")


def tone(freq: float = 440.0, seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A short sine tone as PCM16 little-endian mono (the greeting)."""
    samples = int(seconds * rate)
    return struct.pack(
        f"<{samples}h",
        *(int(8000 * math.sin(2 * math.pi * freq * n / rate)) for n in range(samples)),
    )


async def handle(ws: ServerConnection) -> None:
    call_id = "?"  # the stop message does not repeat it: keep the one from start
    async for message in ws:
        if isinstance(message, bytes):
            await ws.send(message)  # echo: the caller hears themselves
            continue
        event = json.loads(message)
        if event["type"] == "start":
            call_id = event["call_id"]
            log.info("call %s from %s to %s", call_id, event["from"], event["to"])
            await ws.send(tone(rate=event["media_format"]["sample_rate"]))
        elif event["type"] == "stop":
            log.info("call %s ended: %s", call_id, event["reason"])


async def main(host: str, port: int) -> None:
    async with serve(handle, host, port, compression=None):
        log.info("echo agent on ws://%s:%d", host, port)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(main(args.host, args.port))
