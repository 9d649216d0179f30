"""The traffic-center HTTP API (FastAPI): one module per resource, wired in :mod:`.app`."""

from citybrain.api.app import create_app

__all__ = ["create_app"]
