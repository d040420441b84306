"""The dialog state we keep for one call (RFC 3261 §12).

A :class:`Dialog` is created from the INVITE when we send a response that
carries our To tag (§12.1.1), or, for a call we place, from the 2xx to our INVITE
(§12.1.2). It holds what later requests in the call need:
the route set, the remote target, both tags and both CSeq counters. The UA
core asks it to build in-dialog requests (our BYE) with
:meth:`Dialog.create_request` and checks incoming ones with
:meth:`Dialog.accept_remote_cseq`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sipbridge.sip.message import Headers, NameAddr, Request, Response, Uri

Address = tuple[str, int]


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 §12: Call-ID, local tag and remote tag identify a dialog."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr  # the INVITE's To with our tag: our From in requests we send
    remote_party: NameAddr  # the INVITE's From: our To in requests we send
    remote_target: Uri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int = 0
    state: DialogState = DialogState.EARLY

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str, local_seq: int) -> Dialog:
        """UAS dialog creation (RFC 3261 §12.1.1)."""
        # The route set is the Record-Route list in the order received (the
        # UAS side does not reverse it), the remote target is the Contact.
        route_set = [NameAddr.parse(v) for v in invite.headers.get_all("Record-Route")]
        contacts = invite.headers.get_all("Contact")
        remote_target = NameAddr.parse(contacts[0]).uri if contacts else invite.from_.uri
        local_params = dict(invite.to.params)
        local_params["tag"] = local_tag
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag or "",
            local_party=NameAddr(invite.to.display, invite.to.uri, local_params),
            remote_party=invite.from_,
            remote_target=remote_target,
            route_set=route_set,
            local_seq=local_seq,
            remote_seq=invite.cseq.seq,
        )

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """UAC dialog creation from the 2xx to our ``invite`` (RFC 3261 §12.1.2): the
        route set is the response's Record-Route in reverse order, the remote target its
        Contact, our sequence number the INVITE's; the remote one stays empty (0) until
        the peer sends a request."""
        route_set = [NameAddr.parse(v) for v in reversed(response.headers.get_all("Record-Route"))]
        contacts = response.headers.get_all("Contact")
        remote_target = NameAddr.parse(contacts[0]).uri if contacts else invite.uri
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_party=invite.from_,
            remote_party=response.to,
            remote_target=remote_target,
            route_set=route_set,
            local_seq=invite.cseq.seq,
            remote_seq=0,
            state=DialogState.CONFIRMED,
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def accept_remote_cseq(self, seq: int) -> bool:
        """RFC 3261 §12.2.2: a lower CSeq than the last one is out of order (answer 500)."""
        if seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def create_request(
        self, method: str, via: str, *, max_forwards: int = 70
    ) -> tuple[Request, Address]:
        """Build an in-dialog request (RFC 3261 §12.2.1.1) and its next hop.

        ``via`` is the complete Via value for this request (with its branch).
        Returns the request and the (host, port) it should be sent to
        (RFC 3261 §8.1.2: the first route if any, else the remote target).
        """
        self.local_seq += 1
        return self._build(method, via, self.local_seq, max_forwards)

    def create_ack(self, seq: int, via: str) -> tuple[Request, Address]:
        """The ACK of a 2xx to our re-INVITE number ``seq`` (RFC 3261 §13.2.2.4): a
        request of the dialog with the INVITE's CSeq number and a branch of its own."""
        return self._build("ACK", via, seq, 70)

    def _build(self, method: str, via: str, seq: int, max_forwards: int) -> tuple[Request, Address]:
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", str(max_forwards))
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and "lr" not in routes[0].uri.params:
            # Strict routing: the first route becomes the Request-URI and the
            # remote target goes to the end of the Route list (§12.2.1.1).
            uri = routes[0].uri
            routes = [*routes[1:], NameAddr(None, self.remote_target, {})]
        for route in routes:
            headers.add("Route", str(route))
        headers.add("From", str(self.local_party))
        headers.add("To", str(self.remote_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{seq} {method}")
        request = Request(method, uri, headers, b"")
        return request, self.next_hop

    @property
    def next_hop(self) -> Address:
        """Where the dialog's requests go (RFC 3261 §8.1.2: the first route if any, else
        the remote target)."""
        return uri_destination(self.route_set[0].uri if self.route_set else self.remote_target)


def uri_destination(uri: Uri) -> Address:
    """Where to send a request for ``uri`` (RFC 3263 without DNS SRV: host, port).

    ``maddr`` overrides the host (RFC 3261 §19.1.1); the default port is 5060,
    5061 for sips.
    """
    host = uri.params.get("maddr") or uri.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    return host, port
