"""Provider networks, subnets, IPAM and ports."""
