"""The operator HTTP API: calls, carers, health and metrics (see docs/api.md)."""

from callcenter.web.app import build_app
from callcenter.web.server import WebServer, WebStartError, serving_web

__all__ = ["WebServer", "WebStartError", "build_app", "serving_web"]
