"""The compute-host agent and its hypervisor drivers."""
