"""The agent side of a call (sans-I/O): the native protocol v1, Twilio Media Streams mode,
and the playout buffer both use. :func:`make_session` picks the protocol."""

from sipbridge.agent.events import (
    AgentEvent,
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    LimitReached,
    Metadata,
    RateExceeded,
    SendDtmf,
    Transcript,
    TransferCancel,
    TransferComplete,
    TransferRequested,
    UnknownMessage,
)
from sipbridge.agent.factory import PROTOCOLS, make_session
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits, MessageRate
from sipbridge.agent.playout import PlayoutBuffer
from sipbridge.agent.protocol import AgentSession
from sipbridge.agent.session import Session
from sipbridge.agent.twilio import TwilioSession

__all__ = [
    "DEFAULT_LIMITS",
    "PROTOCOLS",
    "AgentEvent",
    "AgentLimits",
    "AgentSession",
    "AudioCleared",
    "AudioDropped",
    "HangupRequested",
    "InvalidMessage",
    "LimitReached",
    "MessageRate",
    "Metadata",
    "PlayoutBuffer",
    "RateExceeded",
    "SendDtmf",
    "Session",
    "Transcript",
    "TransferCancel",
    "TransferComplete",
    "TransferRequested",
    "TwilioSession",
    "UnknownMessage",
    "make_session",
]
