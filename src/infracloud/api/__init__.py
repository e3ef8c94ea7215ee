"""HTTP: OpenStack-compatible routers and error shapes. Nothing imports this package."""
