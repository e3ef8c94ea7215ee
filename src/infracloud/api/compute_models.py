"""The request bodies of Compute v2.1's write routes, as Nova's JSON schemas (microversion 2.1)
describe them: typed, bounded by the database's integer columns (Nova's MAX_INT), and listed
in /openapi.json. A body that does not fit answers 400 in Nova's wording (api/invalid.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from infracloud.api.bodies import MAX_INT

Name = Annotated[str, Field(min_length=1, max_length=255)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Quota = Annotated[int, Field(ge=-1, le=MAX_INT)]
MetaKey = Annotated[str, Field(min_length=1, max_length=255)]
MetaValue = Annotated[str, Field(max_length=255)]
Metadata = dict[MetaKey, MetaValue]


class _Closed(BaseModel):
    """Nova's `additionalProperties: false`."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    """Properties Nova knows and infracloud ignores pass; what it reads is typed."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FlavorIn(_Closed):
    name: Name
    id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    ram: Annotated[int, Field(ge=1, le=MAX_INT)]
    vcpus: Annotated[int, Field(ge=1, le=MAX_INT)]
    disk: Count = 0
    ephemeral: Count | None = Field(None, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: Count | Literal[""] | None = None
    rxtx_factor: Annotated[float, Field(ge=0, le=3.40282e38)] | None = None
    is_public: bool = Field(True, alias="os-flavor-access:is_public")
    description: Annotated[str, Field(max_length=65535)] | None = None


class FlavorBody(_Closed):
    flavor: FlavorIn


class KeypairIn(_Closed):
    name: Name
    type: Literal["ssh", "x509"] = "ssh"
    public_key: str | None = None
    user_id: str | None = None


class KeypairBody(_Closed):
    keypair: KeypairIn


class NetworkIn(_Open):
    uuid: str | None = None
    port: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None


class BlockDevice(_Open):
    uuid: str | None = None
    source_type: str | None = None
    destination_type: str | None = None
    boot_index: int | str | None = None
    volume_size: Count | None = None
    delete_on_termination: bool | None = None


class SecurityGroup(_Open):
    name: str


class ServerIn(_Open):
    name: Name
    flavorRef: Annotated[str, Field(min_length=1, max_length=255)] | int
    imageRef: Annotated[str, Field(max_length=255)] | None = None
    key_name: Name | None = None
    availability_zone: Name | None = None
    metadata: Metadata | None = None
    user_data: Annotated[str, Field(max_length=65535)] | None = None
    config_drive: bool | str | None = None
    networks: list[NetworkIn] | Literal["auto", "none"] | None = None
    min_count: Annotated[int, Field(ge=1, le=MAX_INT)] = 1
    max_count: Annotated[int, Field(ge=1, le=MAX_INT)] = 1
    block_device_mapping_v2: list[BlockDevice] | None = None
    security_groups: list[SecurityGroup] | None = None
    description: Annotated[str, Field(max_length=255)] | None = None
    adminPass: str | None = None
    return_reservation_id: bool = False
    accessIPv4: str | None = None
    accessIPv6: str | None = None

    def image(self) -> str | None:
        """imageRef, or the image a boot-from-image block device names."""
        return self.imageRef or next((b.uuid for b in self.block_device_mapping_v2 or []
                                      if b.source_type == "image"), None)

    def count(self) -> int:
        return self.max_count if self.max_count > 1 else self.min_count


class SchedulerHints(_Open):
    group: str | None = None


class ServerBody(_Open):
    server: ServerIn
    scheduler_hints: SchedulerHints | None = Field(None, alias="os:scheduler_hints")
    scheduler_hints_old: SchedulerHints | None = Field(None, alias="OS-SCH-HNT:scheduler_hints")

    def hints(self) -> dict[str, str]:
        given = self.scheduler_hints or self.scheduler_hints_old
        return {"group": given.group} if given is not None and given.group else {}


class ConsoleOutputIn(_Open):
    length: Annotated[int, Field(ge=-1, le=MAX_INT)] | None = None


class ServerAction(BaseModel):
    """One action; infracloud performs os-getConsoleOutput and answers 400 for the others."""
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    get_console_output: ConsoleOutputIn | None = Field(None, alias="os-getConsoleOutput")


class MetadataBody(_Closed):
    metadata: Metadata


class MetaItemBody(_Closed):
    meta: Annotated[Metadata, Field(min_length=1, max_length=1)]
