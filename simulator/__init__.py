"""A stand-in SMS gateway speaking the real gateway's HTTP API, with fault injection for tests."""

from __future__ import annotations

from simulator.config import SimulatorConfig
from simulator.server import SimulatorThread, make_app, run

__all__ = ["SimulatorConfig", "SimulatorThread", "make_app", "run"]
