"""A misbehaving native agent in a process of its own, so its flood competes with
sipbridge the way a remote agent does (not inside the test's event loop).

``python -m tests.support.flood_agent MODE`` prints ``url ws://127.0.0.1:PORT/`` and then
``done SIP_CALL_ID`` when it has finished with a call. Every call gets three seconds of
tone at once; calls whose SIP Call-ID starts with ``bad`` then get the flood of ``MODE``:

- ``caps``: 5,000 transcripts (2 KB, every 50th 60 KB), 20 metadata of 1 MB and 200 small
  ones, 20,000 ``send_dtmf``; then a mark, and ``done`` once it is answered;
- ``junk``: invalid JSON frames as fast as possible, at most 100,000 or 3 s; ``done``
  when the connection is closed (the count sent follows: ``done ID COUNT``).

Other calls print ``done`` after 4 s. The process stops when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

TONE = b"\x00\x10" * 8000 * 3


async def caps(ws: ServerConnection) -> None:
    line, huge = "y" * 2048, "z" * 60000
    for i in range(5000):
        text = huge if i % 50 == 0 else line
        await ws.send(json.dumps({"type": "transcript", "role": "agent", "text": text}))
    blob = json.dumps({"type": "metadata", "data": {"blob": "m" * 1_000_000}})
    for _ in range(20):
        await ws.send(blob)
    for i in range(200):
        await ws.send(json.dumps({"type": "metadata", "data": {"i": i, "pad": "p" * 1000}}))
    dtmf = json.dumps({"type": "send_dtmf", "digits": "1"})
    for _ in range(20000):
        await ws.send(dtmf)
    await ws.send(json.dumps({"type": "mark", "name": "done"}))
    async for message in ws:
        if isinstance(message, str) and json.loads(message).get("name") == "done":
            return


async def junk(ws: ServerConnection) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    sent = 0
    try:
        while sent < 100_000 and loop.time() < deadline:
            await ws.send("{not json")
            sent += 1
        await ws.wait_closed()
    except ConnectionClosed:
        pass
    return sent


async def handle(ws: ServerConnection, mode: str) -> None:
    start = json.loads(await ws.recv())
    call_id = start["sip_call_id"]
    await ws.send(TONE)
    extra = ""
    if not call_id.startswith("bad"):
        await asyncio.sleep(4)
    elif mode == "caps":
        await caps(ws)
    else:
        extra = f" {await junk(ws)}"
    print(f"done {call_id}{extra}", flush=True)
    with contextlib.suppress(ConnectionClosed):
        await ws.wait_closed()


async def main(mode: str) -> None:
    async with serve(lambda ws: handle(ws, mode), "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"url ws://127.0.0.1:{port}/", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
