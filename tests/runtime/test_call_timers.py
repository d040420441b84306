"""Session timers (RFC 4028), UPDATE (RFC 3311) and delayed offer against SIPp on 127.0.0.1.

The server runs with ``--min-se 2`` and a short ``--session-expires`` so that refreshes and
a missing refresh happen within a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import SERVICE, records, route_to, sipp_ok
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory
from tests.support.sipp import _ACK_2XX, _scenario, invite, run_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.requires("sipp")]

_SDP = """
      v=0
      o=user1 53655765 {version} IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
{direction}"""


def sdp(version: int = 2353687637, direction: str = "") -> str:
    line = f"      a={direction}\n" if direction else ""
    return _SDP.replace("{version}", str(version)).replace("{direction}", line)


def in_dialog(method: str, cseq: int, headers: tuple[str, ...] = (), body: str = "") -> str:
    """A request of SIPp's in the dialog (``body``: SDP text from :func:`sdp`)."""
    extra = "".join(f"      {line}\n" for line in headers)
    content = "      Content-Type: application/sdp\n" if body else ""
    return f"""
  <send retrans="500">
    <![CDATA[

      {method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
{extra}{content}      Content-Length: [len]
{body}
    ]]>
  </send>
"""


def ack(cseq: int, body: str = "") -> str:
    content = "      Content-Type: application/sdp\n" if body else ""
    return f"""
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
{content}      Content-Length: [len]
{body}
    ]]>
  </send>
"""


def reply_200(headers: tuple[str, ...] = (), body: str = "") -> str:
    """SIPp's 200 to the request it just received."""
    extra = "".join(f"      {line}\n" for line in headers)
    content = "      Content-Type: application/sdp\n" if body else ""
    return f"""
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: sip:sipp@[local_ip]:[local_port]
{extra}{content}      Content-Length: [len]
{body}
    ]]>
  </send>
"""


def expect_200(check: str | None = None, var: str = "se") -> str:
    """The 100 (optional) and the 200 of SIPp's request; ``check``: a regular expression
    the 200's Session-Expires must match."""
    if check is None:
        return '  <recv response="100" optional="true"/>\n  <recv response="200"/>\n'
    return f"""  <recv response="100" optional="true"/>
  <recv response="200">
    <action>
      <ereg regexp="{check}" search_in="hdr" header="Session-Expires:" check_it="true"
            assign_to="{var}"/>
    </action>
  </recv>
"""


def answered(headers: tuple[str, ...] = (), check: str | None = None) -> str:
    """INVITE (with ``headers``), 200 (its Session-Expires checked), ACK."""
    return (
        invite(headers=headers)
        + '  <recv response="180" optional="true"/>\n'
        + expect_200(check, "se0")
        + _ACK_2XX
    )


def pause(ms: int) -> str:
    return f'  <pause milliseconds="{ms}"/>\n'


def references(*names: str) -> str:
    return f'  <Reference variables="{",".join(names)}"/>\n'


TIMER_HEADERS = ("Supported: timer", "Session-Expires: 4;refresher=uac")


async def timer_bridge(make_bridge: BridgeFactory) -> SipBridgeServer:
    return await make_bridge(min_se=2, session_expires=4)


async def test_caller_refreshes_with_reinvite_and_update(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Session-Expires: 4;refresher=uac: without refreshes the call would end at 3 s; SIPp
    refreshes by re-INVITE (with SDP) at 1.5 s and by UPDATE (no SDP) at 3 s, and hangs up
    at 4.5 s."""
    bridge = await timer_bridge(make_bridge)
    scenario = _scenario(
        "caller refreshes",
        answered(TIMER_HEADERS, check="^ *4;refresher=uac")
        + pause(1500)
        + in_dialog("INVITE", 2, TIMER_HEADERS, sdp(2353687637))
        + expect_200("^ *4;refresher=uac", "se1")
        + ack(2)
        + pause(1500)
        + in_dialog("UPDATE", 3, TIMER_HEADERS)
        + expect_200("^ *4;refresher=uac", "se2")
        + pause(1500)
        + in_dialog("BYE", 4)
        + expect_200()
        + references("se0", "se1", "se2"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=15
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED
    assert record.reason == "caller_hangup"
    assert record.duration_s is not None and record.duration_s > 4.0


async def test_missing_refresh_ends_the_call_with_bye(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await timer_bridge(make_bridge)
    scenario = _scenario(
        "no refresh",
        answered(TIMER_HEADERS, check="^ *4;refresher=uac")
        + '  <recv request="BYE" timeout="8000"/>\n'
        + reply_200()
        + references("se0"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=15
        )
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
    assert record.status is CallStatus.ANSWERED
    assert record.reason == "session_expired" and record.hangup_by == "server"
    # 4 - 4/4 s (a lowered Min-SE; RFC 4028 §10's rule for longer intervals)
    assert record.duration_s is not None and 2.5 < record.duration_s < 5.0
    assert call.stop is not None and call.stop["reason"] == "session_expired"


async def test_we_refresh_with_reinvite(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """A caller without timer support: we refresh at half the interval (2 s) with a
    re-INVITE carrying our SDP, and ACK its 200; twice, then SIPp hangs up."""
    bridge = await timer_bridge(make_bridge)
    refresh = (
        '  <recv request="INVITE" timeout="5000">\n'
        "    <action>\n"
        '      <ereg regexp="^ *4;refresher=uac" search_in="hdr" header="Session-Expires:"'
        ' check_it="true" assign_to="{var}"/>\n'
        "    </action>\n"
        "  </recv>\n" + reply_200(body=sdp(2353687637)) + '  <recv request="ACK"/>\n'
    )
    scenario = _scenario(
        "we refresh",
        answered((), check="^ *4;refresher=uas")
        + refresh.replace("{var}", "r1")
        + refresh.replace("{var}", "r2")
        + in_dialog("BYE", 2)
        + expect_200()
        + references("se0", "r1", "r2"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=15
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.reason == "caller_hangup"
    assert record.duration_s is not None and 3.5 < record.duration_s < 6.0


async def test_we_refresh_with_update_when_allowed(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await timer_bridge(make_bridge)
    scenario = _scenario(
        "we refresh by UPDATE",
        answered(("Allow: INVITE, ACK, BYE, CANCEL, UPDATE",), check="^ *4;refresher=uas")
        + '  <recv request="UPDATE" timeout="5000"/>\n'
        + reply_200(("Session-Expires: 4;refresher=uac", "Require: timer"))
        + in_dialog("BYE", 2)
        + expect_200()
        + references("se0"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=15
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.reason == "caller_hangup"


async def test_short_session_expires_gets_422(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    bridge = await make_bridge()  # Min-SE 90
    scenario = _scenario(
        "422",
        invite(headers=("Supported: timer", "Session-Expires: 30"))
        + '  <recv response="100" optional="true"/>\n'
        + """  <recv response="422">
    <action>
      <ereg regexp="^ *90" search_in="hdr" header="Min-SE:" check_it="true" assign_to="m"/>
    </action>
  </recv>
"""
        + ack(1).replace(
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", "[last_Via:]"
        )
        + references("m"),
    )
    result = await run_sipp(
        bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=10
    )
    sipp_ok(result)
    [record] = await records(bridge)
    assert record.sip_code == 422 and record.reason == "session_interval_too_small"


def expect_body(regexp: str, var: str) -> str:
    """The 200 of SIPp's request, its SDP body matching ``regexp``."""
    return f"""  <recv response="100" optional="true"/>
  <recv response="200">
    <action>
      <ereg regexp="{regexp}" search_in="body" check_it="true" assign_to="{var}"/>
    </action>
  </recv>
"""


async def test_update_puts_the_call_on_hold_and_back(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """RFC 3311: UPDATE offers answered like a re-INVITE's, the dialog unchanged."""
    bridge = await make_bridge()
    scenario = _scenario(
        "UPDATE hold",
        answered()
        + pause(300)
        + in_dialog("UPDATE", 2, (), sdp(2353687638, "sendonly"))
        + expect_body("a=recvonly", "h1")
        + pause(300)
        + in_dialog("UPDATE", 3, (), sdp(2353687639, "sendrecv"))
        + expect_body("a=sendrecv", "h2")
        + in_dialog("UPDATE", 4, (), sdp(2353687640, "inactive"))
        + expect_body("a=inactive", "h3")
        + in_dialog("BYE", 5)
        + expect_200()
        + references("h1", "h2", "h3"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=10
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.reason == "caller_hangup"


_INVITE_NO_SDP = """
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
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 0 8 9 96 101 102" search_in="body" check_it="true"
            assign_to="offer"/>
    </action>
  </recv>
"""


async def test_delayed_offer_answer_in_the_ack_gets_audio_both_ways(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await make_bridge()
    scenario = _scenario(
        "delayed offer",
        _INVITE_NO_SDP
        + ack(1, sdp())
        + """
  <nop>
    <action>
      <exec play_pcap_audio="pcap/g711a.pcap"/>
    </action>
  </nop>
"""
        + pause(2500)
        + in_dialog("BYE", 2)
        + expect_200()
        + references("offer"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=10
        )
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.codec == "pcma"
    # The caller's audio reached the agent, and its echo went back to the ACK's address.
    assert call.start is not None
    assert sum(len(frame) for frame in call.audio) > 320 * 50
    assert any(any(frame) for frame in call.audio)
    assert record.packets_in is not None and record.packets_in > 50
    assert record.packets_out is not None and record.packets_out > 50


@pytest.mark.parametrize(
    ("body", "reason"),
    [("", "no_sdp_answer"), (sdp().replace("8 101", "18"), "bad_sdp_answer")],
)
async def test_delayed_offer_without_a_usable_answer_is_hung_up(
    make_bridge: BridgeFactory, tmp_path: Path, body: str, reason: str
) -> None:
    bridge = await make_bridge(codecs=("pcma",))
    scenario = _scenario(
        "delayed offer, no answer",
        _INVITE_NO_SDP.replace(" 0 8 9 96 101 102", " 8 101")
        + ack(1, body)
        + '  <recv request="BYE" timeout="5000"/>\n'
        + reply_200()
        + references("offer"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=10
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.reason == reason and record.hangup_by == "server"


def reply(status: int, reason: str) -> str:
    return reply_200().replace("SIP/2.0 200 OK", f"SIP/2.0 {status} {reason}")


async def test_glare_both_ways_then_our_refresh_goes_through(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Our refresh re-INVITE (at 2 s) crosses SIPp's: SIPp's gets 491 from us; SIPp then
    answers a retransmission of ours 491 too; ours comes again after the RFC 3261 §14.1
    back-off (at most 2 s: the caller owns the Call-ID) and gets 200 and our ACK. The
    interval is 8 s so that the back-off always ends before the session does."""
    bridge = await make_bridge(min_se=2, session_expires=8)
    ack_491 = ack(2).replace(
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", "[last_Via:]"
    )
    scenario = _scenario(
        "glare",
        answered((), check="^ *8;refresher=uas")
        + '  <recv request="INVITE" timeout="6000"/>\n'
        + in_dialog("INVITE", 2, (), sdp(2353687638))
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="491"/>\n'
        + ack_491
        + '  <recv request="INVITE" timeout="3000"/>\n'  # Timer A's retransmission of ours
        + reply(491, "Request Pending")
        + '  <recv request="ACK"/>\n'
        + '  <recv request="INVITE" timeout="3000"/>\n'  # after the back-off
        + reply_200(body=sdp(2353687637))
        + '  <recv request="ACK"/>\n'
        + in_dialog("BYE", 3)
        + expect_200()
        + references("se0"),
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=scenario, timeout=15
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert record.reason == "caller_hangup"
