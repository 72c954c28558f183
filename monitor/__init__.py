"""Couples a model's metrics with the business KPIs it drives, and alerts when they part ways."""

__version__ = "0.1.0"
