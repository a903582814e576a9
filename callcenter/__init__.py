"""Eldercare emergency call-centre server."""

__version__ = "0.1.0"
