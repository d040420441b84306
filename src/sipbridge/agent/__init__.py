"""The native agent protocol v1 (sans-I/O) and its playout buffer."""

from sipbridge.agent.playout import PlayoutBuffer
from sipbridge.agent.protocol import (
    AgentEvent,
    AgentSession,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    UnknownMessage,
)

__all__ = [
    "AgentEvent",
    "AgentSession",
    "AudioDropped",
    "HangupRequested",
    "InvalidMessage",
    "PlayoutBuffer",
    "UnknownMessage",
]
