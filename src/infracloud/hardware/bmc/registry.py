"""Build a BMC driver from its access details, importing the protocol library only when used."""

from __future__ import annotations

from infracloud.hardware.bmc.base import Bmc, BmcAccess

DRIVERS = ("redfish", "ipmi", "fake")


def make_bmc(access: BmcAccess) -> Bmc:
    if access.driver == "fake":
        from infracloud.hardware.bmc.fake import FakeBmc

        return FakeBmc(access)
    if access.driver == "redfish":
        from infracloud.hardware.bmc.redfish import RedfishBmc

        return RedfishBmc(access)
    if access.driver == "ipmi":
        from infracloud.hardware.bmc.ipmi import IpmiBmc

        return IpmiBmc(access)
    raise ValueError(f"unknown BMC driver {access.driver!r}; drivers: {', '.join(DRIVERS)}")
