"""The HTTP face of the service: the `/v1` API and the dashboard, over the same functions as
the CLI (`dispatcher.control`, `dispatcher.reports`, `dispatcher.browse`)."""

from __future__ import annotations

from dispatcher.api.main import create_app

__all__ = ["create_app"]
