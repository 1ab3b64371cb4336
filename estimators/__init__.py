"""nasplat's accuracy estimators and hardware cost models (package ``nasplat_estimators``)."""

from __future__ import annotations

from . import accuracy, analytical

__all__ = ["accuracy", "analytical"]
