"""BMC drivers: redfish (sushy), ipmi (pyghmi) and fake (simulated machines)."""

from infracloud.hardware.bmc.base import (
    BOOT_DEVICES,
    POWER_STATES,
    Bmc,
    BmcAccess,
    BmcAuthError,
    BmcError,
    BmcTransient,
    BmcUnsupported,
    Inspection,
)
from infracloud.hardware.bmc.registry import DRIVERS, make_bmc

__all__ = ["BOOT_DEVICES", "DRIVERS", "POWER_STATES", "Bmc", "BmcAccess", "BmcAuthError",
           "BmcError", "BmcTransient", "BmcUnsupported", "Inspection", "make_bmc"]
