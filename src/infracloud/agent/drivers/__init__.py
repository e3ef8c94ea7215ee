"""Hypervisor drivers: how a compute host makes an instance exist."""
