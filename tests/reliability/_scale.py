"""How big each reliability test runs (quick or full), and where its figures are written."""

from __future__ import annotations

import os

STRESS_ENV = "FLASK_UOW_STRESS"
"""Set to ``1`` for the full counts of ``make stress``; anything else runs the quick mode."""

FIGURES_ENV = "FLASK_UOW_RELIABILITY_FIGURES"
"""A directory; when set, each test writes its figures there as one JSON file."""

STRESS = os.environ.get(STRESS_ENV) == "1"
MODE = "full" if STRESS else "quick"


def scaled(quick: int, full: int) -> int:
    """``full`` under ``make stress``, ``quick`` otherwise."""
    return full if STRESS else quick


def scaled_seconds(quick: float, full: float) -> float:
    """A duration: ``full`` under ``make stress``, ``quick`` otherwise."""
    return full if STRESS else quick
