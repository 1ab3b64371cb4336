"""nasplat's accuracy and latency predictors, encoders and zero-cost proxies (package ``nasplat_predictors``)."""

from __future__ import annotations
