"""Codec registry keyed by name (the lowercase SDP encoding name: ``"pcmu"``, ``"pcma"``,
``"g722"``, ``"opus"``).

Importing the package registers G.711 (PCMU and PCMA), G.722 and Opus; a codec is one
module that builds a :class:`CodecInfo` and is registered here. Opus registers even where
libopus is missing: making its encoder or decoder then raises ``OpusError``
(``sipbridge.codecs.opus.opus_available()`` tells beforehand).
"""

from __future__ import annotations

from sipbridge.codecs.base import CodecInfo, ConcealingDecoder, Decoder, Encoder
from sipbridge.codecs.g711 import PCMA, PCMU
from sipbridge.codecs.g722 import G722_CODEC
from sipbridge.codecs.opus import OPUS

__all__ = [
    "CodecInfo",
    "ConcealingDecoder",
    "Decoder",
    "Encoder",
    "UnknownCodec",
    "codec_names",
    "get_codec",
    "register",
]


class UnknownCodec(KeyError):
    """No codec of that name is registered."""


_registry: dict[str, CodecInfo] = {}


def register(info: CodecInfo) -> None:
    """Add ``info`` under ``info.name`` (case-insensitive).

    Registering a different codec under a name already taken raises ValueError: a silent
    replacement would change what every later call negotiates.
    """
    key = info.name.lower()
    existing = _registry.get(key)
    if existing is not None and existing != info:
        raise ValueError(f"codec {key!r} is already registered")
    _registry[key] = info


def get_codec(name: str) -> CodecInfo:
    """The codec registered as ``name`` (case-insensitive); raises UnknownCodec."""
    try:
        return _registry[name.lower()]
    except KeyError:
        raise UnknownCodec(name) from None


def codec_names() -> list[str]:
    """Registered codec names, sorted."""
    return sorted(_registry)


register(PCMU)
register(PCMA)
register(G722_CODEC)
register(OPUS)
