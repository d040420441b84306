"""sipbridge: a self-hosted SIP server that bridges phone calls to AI voice agents."""

__version__ = "0.1.0"
