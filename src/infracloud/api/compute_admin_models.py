"""The request bodies of Compute v2.1's admin routes as Nova's 2.1 schemas have them: quota
sets and the default quota class (every key of 2.1, integers or their strings, "10"; -1 is
unlimited), and the services' enable/disable. A body that does not fit answers 400."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from infracloud.api.bodies import MAX_INT


def _quota_value(value: Any) -> Any:
    """Nova's `integer or string matching ^-?[0-9]+$`: "10" is 10; 10.0, True or " 1" are
    not numbers here."""
    if isinstance(value, (bool, float)):
        raise ValueError("must be an integer")
    if isinstance(value, str):
        text = value[1:] if value.startswith("-") else value
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"{value!r} does not match '^-?[0-9]+$'")
        return int(value)
    return value


Quota = Annotated[int, BeforeValidator(_quota_value), Field(ge=-1, le=MAX_INT)]
Name = Annotated[str, Field(min_length=1, max_length=255)]


class _Closed(BaseModel):
    """Nova's `additionalProperties: false`."""
    model_config = ConfigDict(extra="forbid")


class QuotaClassSetIn(_Closed):
    instances: Quota | None = None
    cores: Quota | None = None
    ram: Quota | None = None
    floating_ips: Quota | None = None
    fixed_ips: Quota | None = None
    metadata_items: Quota | None = None
    key_pairs: Quota | None = None
    security_groups: Quota | None = None
    security_group_rules: Quota | None = None
    injected_files: Quota | None = None
    injected_file_content_bytes: Quota | None = None
    injected_file_path_bytes: Quota | None = None
    server_groups: Quota | None = None
    server_group_members: Quota | None = None

    def limits(self) -> dict[str, int]:
        """The values given (null ones are skipped, as Nova does)."""
        return {k: v for k, v in self.model_dump(exclude_unset=True, exclude={"force"}).items()
                if v is not None}


class QuotaSetIn(QuotaClassSetIn):
    # Nova's boolean parameter: true/false, "True", "yes", "1"...
    force: bool | None = None


class QuotaSetBody(_Closed):
    quota_set: QuotaSetIn


class QuotaClassSetBody(_Closed):
    quota_class_set: QuotaClassSetIn


class ServiceIn(_Closed):
    host: Name
    binary: Name
    disabled_reason: Name | None = None
