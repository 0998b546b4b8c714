"""Prometheus exporter for the Retargeting.biz Traffic Source partners API."""

__version__ = "0.1.0"
