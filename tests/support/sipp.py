"""Drive the real SIPp binary (Debian package ``sip-tester``) against sipbridge on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

SIPP = shutil.which("sipp")
SIPP_SHARE = Path("/usr/share/sip-tester")


def free_udp_port() -> int:
    """An even port free on 127.0.0.1 (UDP and TCP) with the next three: a SIPp signalling
    or media port (SIPp's audio is on the port, its video on the port + 2)."""
    return free_ports(4, even=True)


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    errors: str


async def run_sipp(
    target: tuple[str, int],
    workdir: Path,
    *,
    service: str,
    scenario: str | None = None,
    builtin: str | None = None,
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
) -> SippResult:
    """Run one SIPp call (``-m 1``) and return its exit code and output.

    ``builtin`` names a scenario shipped with SIPp (``-sn``), ``scenario`` is
    XML text written to the work folder (``-sf``). SIPp exits 0 when every
    call succeeded. ``pcap`` in the work folder links to SIPp's audio files.
    """
    assert SIPP is not None, "sipp is not installed (Debian package sip-tester)"
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_SHARE)
    args = [SIPP, f"{target[0]}:{target[1]}", "-m", "1", "-s", service]
    if builtin is not None:
        args += ["-sn", builtin]
    else:
        assert scenario is not None
        path = workdir / "scenario.xml"
        path.write_text(scenario)
        args += ["-sf", str(path)]
    local_port = free_udp_port()
    media_port = free_udp_port()
    args += [
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-mp",
        str(media_port),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    errors_file = workdir / "errors.log"
    errors = errors_file.read_text(errors="replace") if errors_file.exists() else ""
    return SippResult(
        proc.returncode if proc.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        errors,
    )


_INVITE = """
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      X-Customer-Id: 4711
{headers}      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {formats}
{rtpmaps}
    ]]>
  </send>
"""

_ACK_2XX = """
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

_ACK_ERROR = """
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

_PCMA = ("8 101", "      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n")


def _scenario(name: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="{name}">\n{body}\n</scenario>\n'
    )


def _reply(status: str, *headers: str) -> str:
    """SIPp's response ``status`` to the request it just received (whose To carries the
    dialog's tag already)."""
    extra = "".join(f"      {line}\n" for line in headers)
    return f"""  <send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
{extra}      Content-Length: 0

    ]]>
  </send>
"""


def invite(formats: tuple[str, str] = _PCMA, headers: tuple[str, ...] = ()) -> str:
    """The scenario's INVITE, with ``headers`` (``Name: value`` lines) added."""
    extra = "".join(f"      {line}\n" for line in headers)
    return (
        _INVITE.replace("{formats}", formats[0])
        .replace("{rtpmaps}", formats[1])
        .replace("{headers}", extra)
    )


def expect_error_scenario(status: int, formats: tuple[str, str] = _PCMA) -> str:
    """INVITE, then the final response ``status`` (ACKed); anything else fails the call."""
    return _scenario(
        f"expect {status}",
        invite(formats)
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + f'  <recv response="{status}"/>\n'
        + _ACK_ERROR,
    )


def cancel_scenario() -> str:
    """INVITE, wait for 180, CANCEL: expect 200 for the CANCEL and 487 for the INVITE."""
    cancel = """
  <send>
    <![CDATA[

      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""
    return _scenario(
        "cancel",
        invite()
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180"/>\n'
        + cancel
        + '  <recv response="200"/>\n'
        + '  <recv response="487"/>\n'
        + _ACK_ERROR,
    )


def wait_for_bye_scenario() -> str:
    """INVITE, 200, ACK, then wait for the server's BYE and answer 200."""
    return _scenario(
        "wait for BYE",
        invite()
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + '  <recv response="200" rtd="true"/>\n'
        + _ACK_2XX
        + '  <recv request="BYE"/>\n'
        + _reply("200 OK"),
    )


_BYE = """
  <send retrans="500">
    <![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""


def play_pcap_scenario(formats: tuple[str, str], pcap: str, pause_ms: int) -> str:
    """INVITE offering ``formats`` (an ``m=`` format list and its attribute lines), 200,
    ACK, then play the RTP in ``pcap`` (a path relative to the work folder) from the media
    port, wait ``pause_ms`` and hang up with BYE."""
    play = f"""
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause milliseconds="{pause_ms}"/>
"""
    return _scenario(
        "play pcap",
        invite(formats)
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + '  <recv response="200" rtd="true"/>\n'
        + _ACK_2XX
        + play
        + _BYE
        + '  <recv response="200" crlf="true"/>\n',
    )


def prack_scenario() -> str:
    """INVITE requiring 100rel (RFC 3262): the 180 must come with RSeq; PRACK it (RAck
    from that RSeq), expect 200 for the PRACK, then the INVITE's 200; ACK, BYE."""
    prack = """
  <send>
    <![CDATA[

      PRACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 PRACK
      RAck: [$rseq] 1 INVITE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""
    bye = _BYE.replace("CSeq: 2 BYE", "CSeq: 3 BYE")
    return _scenario(
        "100rel",
        invite(headers=("Require: 100rel", "Supported: 100rel"))
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" rrs="true">\n'
        + "    <action>\n"
        + '      <ereg regexp="[0-9]+" search_in="hdr" header="RSeq:" check_it="true"'
        + ' assign_to="rseq"/>\n'
        + "    </action>\n"
        + "  </recv>\n"
        + prack
        + '  <recv response="200"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + '  <recv response="200" rtd="true"/>\n'
        + _ACK_2XX
        + '  <pause milliseconds="300"/>\n'
        + bye
        + '  <recv response="200" crlf="true"/>\n',
    )


def challenged_bye(username: str, password: str) -> str:
    """SIPp's side of our BYE challenged (RFC 3261 §22.2): the BYE gets 401; the next one
    must carry a digest SIPp verifies for ``username`` and ``password`` (200), else it gets
    403 and the call fails."""
    return (
        '  <recv request="BYE" timeout="10000"/>\n'
        + _reply(
            "401 Unauthorized",
            'WWW-Authenticate: Digest realm="sipp.test", nonce="[pid]b", qop="auth"',
        )
        + '  <recv request="BYE"><action><verifyauth assign_to="valid" '
        f'username="{username}" password="{password}"/></action></recv>\n'
        + '  <nop test="valid" next="good"/>\n'
        + _reply("403 Forbidden")
        + '  <recv request="NEVER" timeout="100"/>\n'  # a wrong digest: the call fails
        + '  <label id="good"/>\n'
        + _reply("200 OK")
    )


_NOTIFY_FAILURE = """
  <send retrans="500">
    <![CDATA[

      NOTIFY [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 NOTIFY
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Event: refer
      Subscription-State: terminated;reason=noresource
      Content-Type: message/sipfrag
      Content-Length: [len]

      SIP/2.0 486 Busy Here
    ]]>
  </send>
"""


def refer_scenario(
    *, refer_status: str, notify_failure: bool = False, talk_ms: int = 2500, hang_up: bool = True
) -> str:
    """The caller of a transfer: INVITE (PCMA), 200, ACK; the server's REFER answered
    ``refer_status`` (``603 Decline``, ``501 Not Implemented``, ``202 Accepted``); with
    ``notify_failure``, a NOTIFY whose sipfrag says 486 follows (RFC 3515 §2.4.5). Then
    the caller plays A-law audio for ``talk_ms`` and hangs up with BYE (``hang_up``), or
    waits for the server's BYE and answers it."""
    after = ""
    if notify_failure:
        after = _NOTIFY_FAILURE + '  <recv response="200"/>\n'
    bye = _BYE.replace("CSeq: 2 BYE", "CSeq: 3 BYE").replace(
        "BYE sip:[service]@[remote_ip]:[remote_port]", "BYE [next_url]"
    )
    return _scenario(
        f"refer {refer_status}",
        invite()
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + '  <recv response="200" rtd="true" rrs="true"/>\n'
        + _ACK_2XX
        + '  <recv request="REFER"/>\n'
        + _reply(refer_status)
        + after
        + '  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>\n'
        + f'  <pause milliseconds="{talk_ms}"/>\n'
        + (
            bye + '  <recv response="200" crlf="true"/>\n'
            if hang_up
            else '  <recv request="BYE"/>\n' + _reply("200 OK")
        ),
    )


async def wait_bound(port: int, tcp: bool, timeout: float = 10.0) -> None:
    """Wait until something has bound 127.0.0.1:``port`` (UDP, or TCP with ``tcp``): our
    own bind of it fails. A tool started a moment ago may not listen yet, and a request
    sent before it does is lost (UDP: a retransmission later) or refused (TCP: at once)."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        await asyncio.sleep(0.02)


async def start_uas(
    workdir: Path,
    scenario: str,
    *,
    transport: str = "udp",
    timeout: str = "20s",
    extra: tuple[str, ...] = (),
) -> tuple[asyncio.subprocess.Process, int]:
    """SIPp as a UAS on 127.0.0.1 (a trunk's far end, a registrar, a transfer target)
    running ``scenario`` for one call over ``transport`` (udp or tcp); its process and
    SIP port, once it listens. ``extra`` are more SIPp options (``-rtp_echo``...). End it
    with :func:`uas_done`."""
    assert SIPP is not None, "sipp is not installed (Debian package sip-tester)"
    path = workdir / "uas.xml"
    path.write_text(scenario)
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_SHARE)
    port = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        SIPP,
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(free_udp_port()),
        "-t",
        "u1" if transport == "udp" else "t1",
        "-m",
        "1",
        "-timeout",
        timeout,
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        *extra,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_bound(port, tcp=transport != "udp")
    except AssertionError:
        process.kill()
        await process.wait()
        raise
    return process, port


async def uas_done(process: asyncio.subprocess.Process, workdir: Path, timeout: float = 15) -> int:
    """Wait for a SIPp UAS started by a test (a trunk's far end, a registrar) to end; its
    exit code (killed after ``timeout``: -9), with its error log printed when it failed."""
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
    errors = workdir / "errors.log"
    if process.returncode != 0 and errors.exists():
        print(errors.read_text(errors="replace")[-4000:])
    return process.returncode if process.returncode is not None else -1
