"""Trusted proxies and X-Sipbridge-Source (sans-I/O, fake clock): the header's grammar, who
is trusted, the raw-bytes read before parsing, and the guard applied to the real source."""

from __future__ import annotations

import pytest

from sipbridge.sip.framing import Transport
from sipbridge.sip.guard import Admission, GuardLimits, SourceGuard
from sipbridge.sip.proxy import (
    MAX_REMEMBERED,
    PROXY_OWN,
    Relayed,
    TrustedProxies,
    admit_message,
    carries_source_header,
    parse_source,
)

PROXY = ("10.0.0.5", 5060)
CALLER = ("198.51.100.7", 5062)  # a real source behind the proxy
OTHER = ("198.51.100.8", 5060)  # another one
CARRIER = "203.0.113.10"


def request(*extra: str, method: str = "INVITE", body: str = "") -> bytes:
    return (
        f"{method} sip:+12025550101@10.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-p1\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-c1;received=198.51.100.7\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:+12025550101@10.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 69\r\n"
        + "".join(f"{line}\r\n" for line in extra)
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def relayed_from(host: str, port: int, transport: str = "udp") -> bytes:
    return request(f"X-Sipbridge-Source: {host}:{port};transport={transport}")


class TestParseSource:
    @pytest.mark.parametrize(
        ("value", "address", "transport"),
        [
            ("198.51.100.7:5062", ("198.51.100.7", 5062), None),
            ("198.51.100.7:5062;transport=udp", ("198.51.100.7", 5062), Transport.UDP),
            ("198.51.100.7:5061 ; transport = TLS", ("198.51.100.7", 5061), Transport.TLS),
            ("  198.51.100.7:1;transport=tcp  ", ("198.51.100.7", 1), Transport.TCP),
            ("[2001:DB8::7]:5060", ("2001:db8::7", 5060), None),  # as a socket writes it
            ("[::ffff:192.0.2.1]:65535;transport=udp", ("192.0.2.1", 65535), Transport.UDP),
        ],
    )
    def test_valid(self, value: str, address: tuple[str, int], transport: Transport | None) -> None:
        assert parse_source(value) == (address, transport)

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("", "not ip:port"),
            ("198.51.100.7", "not ip:port"),
            ("198.51.100.7:", "not ip:port"),
            ("caller.example.com:5060", "not ip:port"),  # a name is no source address
            ("2001:db8::7:5060", "not ip:port"),  # IPv6 needs its brackets
            ("198.51.100.7:5060;transport=udp;x=1", "not ip:port"),
            ("198.51.100.7:5060, 198.51.100.8:5060", "not ip:port"),
            ("198.51.100.300:5060", "not an IP address"),
            ("1.2.3:5060", "not an IP address"),
            ("[2001:db8::zz]:5060", "not ip:port"),
            ("[2001:db8:::7]:5060", "not an IP address"),
            ("198.51.100.7:0", "port outside 1-65535"),
            ("198.51.100.7:65536", "port outside 1-65535"),
            ("198.51.100.7:5060;transport=sctp", "transport not udp, tcp or tls"),
        ],
    )
    def test_malformed(self, value: str, why: str) -> None:
        with pytest.raises(ValueError, match=why):
            parse_source(value)


class TestTrustedProxies:
    def test_addresses_networks_and_lists(self) -> None:
        proxies = TrustedProxies.parse(["10.0.0.5", "10.1.0.9/29, [2001:db8::5]", "10.0.0.5"])
        assert str(proxies) == "10.0.0.5,10.1.0.8/29,2001:db8::5"
        assert proxies
        assert proxies.trusts("10.0.0.5")
        assert proxies.trusts("::ffff:10.0.0.5")  # a dual-stack socket's view of it
        assert proxies.trusts("10.1.0.15") and proxies.trusts("::ffff:10.1.0.8")
        assert proxies.trusts("2001:db8::5")
        for host in ("10.0.0.6", "10.1.0.16", "2001:db8::6", "not-an-address", ""):
            assert not proxies.trusts(host)

    def test_broad_networks_are_pointed_out(self) -> None:
        proxies = TrustedProxies.parse(["10.0.0.5", "10.0.0.0/24", "10.0.0.0/23", "0.0.0.0/0"])
        assert [str(n) for n in proxies.broad] == ["10.0.0.0/23", "0.0.0.0/0"]
        v6 = TrustedProxies.parse(["2001:db8::/64", "2001:db8::/48"])
        assert [str(n) for n in v6.broad] == ["2001:db8::/48"]

    def test_nobody_by_default(self) -> None:
        proxies = TrustedProxies.parse([])
        assert not proxies and str(proxies) == ""
        assert not proxies.trusts("127.0.0.1")

    @pytest.mark.parametrize("entry", ["proxy.example.com", "10.0.0.0/33", "10.0.0.1-10.0.0.9"])
    def test_invalid_entries(self, entry: str) -> None:
        with pytest.raises(ValueError, match="is not an IP address or network"):
            TrustedProxies.parse([entry])

    def test_verdicts_remembered_for_a_bounded_number_of_hosts(self) -> None:
        proxies = TrustedProxies.parse(["10.1.0.0/16"])
        for n in range(MAX_REMEMBERED + 100):
            host = f"198.{n // 65536}.{n // 256 % 256}.{n % 256}"
            assert not proxies.trusts(host)
        assert len(proxies._verdicts) == MAX_REMEMBERED
        assert proxies.trusts("10.1.2.3")  # still judged right once full


class TestRelayed:
    proxies = TrustedProxies.parse(["10.0.0.5"])

    def test_the_header_names_the_origin(self) -> None:
        assert self.proxies.relayed(relayed_from("198.51.100.7", 5062)) == Relayed(
            CALLER, Transport.UDP
        )
        assert self.proxies.relayed(request("x-sipbridge-source:[2001:db8::7]:5060")) == Relayed(
            ("2001:db8::7", 5060)
        )

    def test_without_the_header_the_message_is_the_proxys_own(self) -> None:
        assert self.proxies.relayed(request(method="OPTIONS")) is PROXY_OWN
        assert PROXY_OWN.own
        # A response is never read for it, whatever it carries.
        response = b"SIP/2.0 200 OK\r\nX-Sipbridge-Source: 198.51.100.7:5062\r\n\r\n"
        assert self.proxies.relayed(response) is PROXY_OWN

    def test_only_the_header_section_is_read(self) -> None:
        body = "v=0\r\nX-Sipbridge-Source: 198.51.100.7:5062\r\n"
        assert self.proxies.relayed(request(body=body)) is PROXY_OWN
        assert not carries_source_header(request(body=body))

    @pytest.mark.parametrize(
        ("data", "error"),
        [
            (
                request(
                    "X-Sipbridge-Source: 198.51.100.7:5062",
                    "X-Sipbridge-Source: 192.0.2.1:5060",  # the client's copy left in
                ),
                "more than one header",
            ),
            (request("X-Sipbridge-Source: 198.51.100.7:0"), "port outside 1-65535"),
            (request("X-Sipbridge-Source:"), "not ip:port"),
            (request("X-Sipbridge-Source: 198.51.100.7:5062,", " 192.0.2.1:5060"), "folded"),
            (
                "INVITE sip:x SIP/2.0\r\nX-Sipbridge-Source: 1.2.3.4:5\xe9\r\n\r\n".encode(
                    "latin-1"
                ),
                "not ASCII",
            ),
        ],
    )
    def test_malformed_headers_say_why(self, data: bytes, error: str) -> None:
        relayed = self.proxies.relayed(data)
        assert relayed.origin is None and relayed.error is not None and error in relayed.error
        assert not relayed.own

    def test_carries_source_header(self) -> None:
        assert carries_source_header(relayed_from("198.51.100.7", 5062))
        assert carries_source_header(request("x-SIPBRIDGE-source : 1.2.3.4:5"))
        assert not carries_source_header(request())


def guard() -> SourceGuard:
    return SourceGuard(
        GuardLimits(rate=10.0, burst=20, ban_time=600.0),
        trusted=lambda host: host == CARRIER,
    )


class TestAdmitMessage:
    proxies = TrustedProxies.parse([PROXY[0]])

    def test_header_from_an_untrusted_source_is_ignored(self) -> None:
        shield = guard()
        data = relayed_from(*OTHER)
        for _ in range(20):
            assert admit_message(shield, self.proxies, data, CALLER, 0.0) == (
                Admission.ADMIT,
                None,
            )
        # The sender's own bucket ran dry, whatever source it claimed.
        assert admit_message(shield, self.proxies, data, CALLER, 0.0)[0] is Admission.BANNED
        assert shield.is_banned(CALLER[0], 0.0) and not shield.is_banned(OTHER[0], 0.0)

    def test_a_flood_through_the_proxy_bans_its_real_source_only(self) -> None:
        shield = guard()
        flood = relayed_from(*CALLER)
        verdicts = [admit_message(shield, self.proxies, flood, PROXY, 0.0)[0] for _ in range(25)]
        assert verdicts == [Admission.ADMIT] * 20 + [Admission.BANNED] * 5
        [ban] = shield.take_new_bans()
        assert (ban.address, ban.reason) == (CALLER[0], "flood")
        assert not shield.is_banned(PROXY[0], 0.0)
        # The banned source's next requests through the proxy are dropped unparsed...
        admission, relayed = admit_message(shield, self.proxies, flood, PROXY, 1.0)
        assert admission is Admission.BANNED and relayed == Relayed(CALLER, Transport.UDP)
        # ... while another source through the same proxy and the proxy's own probe pass.
        other = relayed_from(*OTHER)
        assert admit_message(shield, self.proxies, other, PROXY, 1.0)[0] is Admission.ADMIT
        probe = request(method="OPTIONS")
        assert admit_message(shield, self.proxies, probe, PROXY, 1.0) == (
            Admission.ADMIT,
            PROXY_OWN,
        )
        # The same address sending directly is banned as well: it is one source.
        assert admit_message(shield, self.proxies, request(), CALLER, 1.0)[0] is Admission.BANNED

    def test_the_proxy_itself_is_never_limited_or_banned(self) -> None:
        shield = guard()
        probe = request(method="OPTIONS")
        for n in range(1000):  # far beyond any source's burst
            assert admit_message(shield, self.proxies, probe, PROXY, n / 1000)[0] is Admission.ADMIT
        # A ban of the proxy's address (by hand, or stored by another instance) stops
        # nobody behind it, nor the proxy's own messages.
        shield.ban(PROXY[0], "manual", 2.0)
        assert admit_message(shield, self.proxies, probe, PROXY, 2.0)[0] is Admission.ADMIT
        relayed = relayed_from(*CALLER)
        assert admit_message(shield, self.proxies, relayed, PROXY, 2.0)[0] is Admission.ADMIT
        assert not shield.is_banned(CALLER[0], 2.0)

    def test_a_malformed_header_is_admitted_for_its_400(self) -> None:
        shield = guard()
        data = request("X-Sipbridge-Source: nowhere")
        admission, relayed = admit_message(shield, self.proxies, data, PROXY, 0.0)
        assert admission is Admission.ADMIT
        assert relayed is not None and relayed.error == "not ip:port[;transport=udp|tcp|tls]"

    def test_a_trunk_behind_the_proxy_is_throttled_not_banned(self) -> None:
        shield = guard()
        data = relayed_from(CARRIER, 5060)
        verdicts = [admit_message(shield, self.proxies, data, PROXY, 0.0)[0] for _ in range(22)]
        assert verdicts == [Admission.ADMIT] * 20 + [Admission.THROTTLED] * 2
        assert shield.take_new_bans() == []
