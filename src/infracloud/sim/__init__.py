"""Simulated workloads (the demo's synthetic CI load)."""
