"""Flavors, keypairs, servers, the scheduler, compute hosts and quotas."""
