"""The request bodies of Network v2.0's write routes, as Neutron's attribute maps describe them:
the attributes infracloud takes, those it accepts and ignores, and no others ("Unrecognized
attribute(s)"). Listed in /openapi.json; worded as Neutron words them (api/invalid.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class PortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    network_id: Annotated[str, Field(min_length=1, max_length=36)]
    device_id: Annotated[str, Field(max_length=36)] | None = None
    device_owner: Annotated[str, Field(max_length=64)] | None = None
    # accepted and ignored
    name: Annotated[str, Field(max_length=255)] | None = None
    description: Annotated[str, Field(max_length=255)] | None = None
    admin_state_up: bool | None = None

    def taken(self) -> dict[str, str]:
        """What the network service takes: the three attributes, when given."""
        return {k: v for k, v in self.model_dump(
            include={"network_id", "device_id", "device_owner"}).items() if v is not None}


class PortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: PortIn


class QuotaIn(BaseModel):
    """`openstack quota set --ports N` sends every network resource: only `port` is kept (the
    others are fixed here), the rest accepted and ignored as Neutron ignores unknown ones."""

    model_config = ConfigDict(extra="allow")
    port: int | None = Field(None, ge=-1, le=2**31 - 1)


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota: QuotaIn
