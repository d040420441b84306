"""SIP (RFC 3261): message grammar and parser, transactions, dialogs and the UAS core.

Everything here is sans-I/O: bytes and the current time go in, bytes and events come out.
"""
