"""Bare metal: inventories, BMC drivers, the provisioning state machine's conductor, and the
capacity the enrolled machines give."""
