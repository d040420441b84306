"""The management REST API (FastAPI), served by ``sipbridge serve`` next to SIP."""

from sipbridge.api.app import create_app

__all__ = ["create_app"]
