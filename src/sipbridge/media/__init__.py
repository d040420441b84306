"""The media engine's sans-I/O building blocks.

- :mod:`sipbridge.media.resample` — streaming PCM16 resampler (polyphase FIR), identity when rates
  match;
- :mod:`sipbridge.media.plc` — ITU-T G.711 Appendix I packet loss concealment for decoders
  that have none of their own (G.711, G.722);
- :mod:`sipbridge.media.jitter` — adaptive jitter buffer: reorder, duplicates, late
  packets, loss detection, depth from the RFC 3550 jitter estimate;
- :mod:`sipbridge.media.dtmf` — RFC 4733 telephone-event receiver and sender, SIP INFO
  DTMF bodies;
- :mod:`sipbridge.media.quality` — RFC 3550 receiver statistics and an ITU-T G.107
  E-model MOS estimate.

Nothing here imports asyncio, opens a socket or reads the clock: every input that depends
on time takes ``now`` (seconds, any monotonic origin).
"""
