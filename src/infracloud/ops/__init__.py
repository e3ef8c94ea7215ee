"""Metrics, structured logs, events, reports, health, dashboard."""
