"""nasplat's Dash dashboards (package ``nasplat_dashboards``): data extraction and figures, kept apart."""

from __future__ import annotations
