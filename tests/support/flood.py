"""SIPp from any loopback address: ordinary calls (a trunk's address) and INVITE floods.

``tests/support/sipp.py`` runs SIPp from 127.0.0.1 only; the flood tests need callers and
attackers on 127.0.0.2-4, so this module starts SIPp processes itself and lets several run
at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports
from tests.support.sipp import SIPP, SIPP_SHARE

# One INVITE per call, nothing awaited: with -nr (no retransmissions) every "call" is
# exactly one datagram. No User-Agent: nothing for a scanner check to catch.
FLOOD_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="invite flood">
  <send>
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]F[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:caller@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
</scenario>
"""


@dataclass
class SippRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float  # seconds the process ran
    timed_out: bool

    def sent(self, method: str = "INVITE") -> int:
        """Messages of ``method`` SIPp sent (its final scenario screen)."""
        found = re.findall(rf"^\s*{method} -+>\s+(\d+)", self.stdout, re.M)
        return int(found[-1]) if found else 0


class SippProcess:
    """One SIPp process started from ``local_ip``; :meth:`wait` collects it."""

    def __init__(self, proc: asyncio.subprocess.Process, timeout: float) -> None:
        self.proc = proc
        self.timeout = timeout
        self.started = time.monotonic()

    async def wait(self) -> SippRun:
        remaining = max(1.0, self.timeout + 10 - (time.monotonic() - self.started))
        timed_out = False
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), remaining)
        except TimeoutError:
            timed_out = True
            self.proc.kill()
            out, err = await self.proc.communicate()
        return SippRun(
            self.proc.returncode if self.proc.returncode is not None else -1,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - self.started,
            timed_out,
        )


def _prepare(workdir: Path) -> None:
    """The work folder, with ``pcap`` linking to SIPp's audio files."""
    workdir.mkdir(parents=True, exist_ok=True)
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_SHARE)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def start_sipp(
    target: tuple[str, int],
    workdir: Path,
    *,
    local_ip: str,
    service: str,
    builtin: str | None = None,
    scenario: str | None = None,
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
) -> SippProcess:
    """Start SIPp against ``target`` from ``local_ip`` (signalling and media) for ``calls``
    calls (``-m``), at ``rate`` calls per second when given; SIPp quits after ``timeout``
    seconds (``-timeout``) and is killed 10 s later if it has not."""
    assert SIPP is not None, "sipp is not installed (Debian package sip-tester)"
    _prepare(workdir)
    args = [SIPP, f"{target[0]}:{target[1]}", "-m", str(calls), "-s", service]
    if builtin is not None:
        args += ["-sn", builtin]
    else:
        assert scenario is not None
        args += ["-sf", str(_write(workdir / "scenario.xml", scenario))]
    if rate is not None:
        args += ["-r", str(rate), "-l", str(max(calls, 1))]
    args += [
        "-i",
        local_ip,
        "-mi",
        local_ip,
        "-p",
        str(free_ports(4, host=local_ip, even=True)),
        "-mp",
        str(free_ports(4, host=local_ip, even=True)),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return SippProcess(proc, timeout)
