"""Database models. Every schema change comes with an Alembic migration
(tests/unit/test_store.py fails when the models and the migrations disagree)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from infracloud.core.clock import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(32)
DEFAULT_DOMAIN = "default"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uq_projects_domain_name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    domain_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_DOMAIN)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uq_users_domain_name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_DOMAIN)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    default_project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL")
    )
    password_changed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class RoleImplication(Base):
    """admin implies member implies reader, as in keystone's bootstrap."""

    __tablename__ = "role_implications"

    prior_role_id: Mapped[str] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )
    implied_role_id: Mapped[str] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )


class Assignment(Base):
    """A role a user holds on a project."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_project", "project_id"),)

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )


class ApplicationCredential(Base):
    __tablename__ = "application_credentials"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_appcred_user_name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    secret_hash: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[dt.datetime | None]
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApplicationCredentialRole(Base):
    __tablename__ = "application_credential_roles"

    application_credential_id: Mapped[str] = mapped_column(
        ForeignKey("application_credentials.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )


class FernetKey(Base):
    """Token encryption keys. The newest is primary; older ones still validate until pruned.
    Each is stored encrypted with the site's secret key file (core.secrets)."""

    __tablename__ = "fernet_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CacheGeneration(Base):
    """A counter per kind of data that controllers cache (flavors, identity, token keys), moved
    by the transaction that changes such data; every controller reads them all to know when to
    empty a cache (store.generations)."""

    __tablename__ = "cache_generations"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[dt.datetime]


class RevocationEvent(Base):
    """Tokens matching an event and issued at or before `issued_before` are invalid."""

    __tablename__ = "revocation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str | None] = mapped_column(String(32), index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    project_id: Mapped[str | None] = mapped_column(String(32), index=True)
    issued_before: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Image(Base):
    """An image record. Its data lives in the image store under `blob` (the sha512 hex digest
    of the content: identical uploads share one blob)."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_owner_created", "owner", "created_at"),
                      Index("ix_images_created_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    owner: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="shared")
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    os_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    disk_format: Mapped[str | None] = mapped_column(String(16))
    container_format: Mapped[str | None] = mapped_column(String(16))
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int | None] = mapped_column(BigInteger)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(32))
    os_hash_algo: Mapped[str | None] = mapped_column(String(16))
    os_hash_value: Mapped[str | None] = mapped_column(String(128), index=True)
    properties: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # which controller is receiving the data, and when it last made progress
    upload_owner: Mapped[str | None] = mapped_column(String(255))
    upload_heartbeat: Mapped[dt.datetime | None]


class ImageMember(Base):
    """A project an image is shared with (visibility `shared`)."""

    __tablename__ = "image_members"

    image_id: Mapped[str] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap_mb: Mapped[int] = mapped_column(Integer, default=0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    extra_specs: Mapped[dict[str, str] | None] = mapped_column(JSON)


class FlavorProject(Base):
    """A project that may see and use a private flavor (nova's flavor access list)."""

    __tablename__ = "flavor_projects"

    flavor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class ServerGroup(Base):
    """A project's server group: its members (instances.server_group_id) are placed on one
    host (affinity) or each on a host of its own (anti-affinity)."""

    __tablename__ = "server_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Keypair(Base):
    """SSH public keys belong to users, as in nova."""

    __tablename__ = "keypairs"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16), default="ssh")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Host(Base):
    """A compute host, as its agent registered it. `used_*` are the claims of the instances
    placed on it; the scheduler changes them only with conditional updates."""

    __tablename__ = "hosts"
    __table_args__ = (Index("ix_hosts_sched", "enabled", "state", "availability_zone"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    driver: Mapped[str] = mapped_column(String(32))
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    reserved_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    reserved_ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    reserved_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    cpu_ratio: Mapped[float] = mapped_column(default=1.0)
    ram_ratio: Mapped[float] = mapped_column(default=1.0)
    disk_ratio: Mapped[float] = mapped_column(default=1.0)
    used_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    used_ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    used_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="up")
    last_heartbeat: Mapped[dt.datetime] = mapped_column(default=utcnow)
    down_since: Mapped[dt.datetime | None]
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # What servers may have of each resource: the hardware's times the allocation ratio, less
    # what is reserved; and the room left after the claims. On a row they are numbers, on the
    # class SQL expressions (the scheduler, capacity, status, usage and alerts all use these).
    @hybrid_property
    def size_vcpus(self) -> float:
        return self.vcpus * self.cpu_ratio - self.reserved_vcpus

    @hybrid_property
    def size_ram_mb(self) -> float:
        return self.ram_mb * self.ram_ratio - self.reserved_ram_mb

    @hybrid_property
    def size_disk_gb(self) -> float:
        return self.disk_gb * self.disk_ratio - self.reserved_disk_gb

    @hybrid_property
    def free_vcpus(self) -> float:
        return self.size_vcpus - self.used_vcpus

    @hybrid_property
    def free_ram_mb(self) -> float:
        return self.size_ram_mb - self.used_ram_mb

    @hybrid_property
    def free_disk_gb(self) -> float:
        return self.size_disk_gb - self.used_disk_gb

    @hybrid_property
    def takes_servers(self) -> bool:
        """Up and enabled: a host the scheduler may place servers on (the capacity figures
        count these)."""
        return self.state == "up" and self.enabled

    @takes_servers.inplace.expression
    @classmethod
    def _takes_servers_expression(cls) -> ColumnElement[bool]:
        return and_(cls.state == "up", cls.enabled.is_(True))


class HostCredential(Base):
    """What an agent presents (X-Agent-Token): it opens its host only. Stored as a SHA-256 of
    the secret. `issued` credentials are made at join (or by the demo); a rotation adds the
    successor (`next_hash`, and the secret sealed with the site's key until the agent has it),
    which replaces the current one when the agent first uses it. A `file` credential is the
    site's agent token (compute.agent_token_file), bound to the first host that registered
    with it. Deleting the host deletes its credentials."""

    __tablename__ = "host_credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="issued")
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    next_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    next_secret: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[dt.datetime | None]


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_project_created", "project_id", "created_at"),
                      Index("ix_instances_host_state", "host_id", "state"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    project_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    flavor_id: Mapped[str] = mapped_column(String(64), index=True)
    image_id: Mapped[str | None] = mapped_column(String(36))
    key_name: Mapped[str | None] = mapped_column(String(255))
    key_data: Mapped[str | None] = mapped_column(Text)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    user_data: Mapped[str | None] = mapped_column(Text)
    config_drive: Mapped[bool] = mapped_column(Boolean, default=True)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    mac_address: Mapped[str | None] = mapped_column(String(17))
    network_name: Mapped[str | None] = mapped_column(String(255))
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    console: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[dt.datetime | None]
    server_group_id: Mapped[str | None] = mapped_column(String(36), index=True)
    reservation_id: Mapped[str | None] = mapped_column(String(16), index=True)
    # accessIPv4/accessIPv6 as the owner set them (None: the view shows the fixed address)
    access_ipv4: Mapped[str | None] = mapped_column(String(45))
    access_ipv6: Mapped[str | None] = mapped_column(String(45))
    server_password: Mapped[str | None] = mapped_column(Text)  # os-server-password
    # server actions (compute.actions): who locked it ("owner" or "admin"; None: unlocked),
    # and the action its host's agent is to carry out: an id the agent's report names when
    # done, and what it needs (the snapshot's image id)
    locked_by: Mapped[str | None] = mapped_column(String(16))
    task_id: Mapped[str | None] = mapped_column(String(36))
    task_args: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # its lifetime (compute/lifetimes.py): when it is deleted (None: when its owner deletes
    # it), the limit in seconds from its creation and what set it, the expiry a warning was
    # sent for, and the admin who exempted it
    expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    lifetime_limit: Mapped[int | None] = mapped_column(Integer)
    lifetime_reason: Mapped[str | None] = mapped_column(String(255))
    expiry_warned_for: Mapped[dt.datetime | None]
    exempted_by: Mapped[str | None] = mapped_column(String(255))


class UnknownServer(Base):
    """A server a compute host's agent runs that the database does not know (created after the
    backup it was restored from, or deleted while its host was down), from the agent's first
    report until it is destroyed or adopted (states.UNKNOWN_SERVER). What the agent knows of it
    (name, project, flavor, address...) is kept for the events and for an adoption; its address
    is held by a port meanwhile, so it is not handed to another server."""

    __tablename__ = "unknown_servers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the server's id
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(32))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Network(Base):
    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    project_id: Mapped[str | None] = mapped_column(String(32))
    physical_network: Mapped[str] = mapped_column(String(64), default="provider")
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Subnet(Base):
    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(45))
    pool_start: Mapped[int] = mapped_column(BigInteger)
    pool_end: Mapped[int] = mapped_column(BigInteger)
    next_ip: Mapped[int | None] = mapped_column(BigInteger)  # where IPAM looks first
    dns: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Port(Base):
    """An address handed out by IPAM. One per server; the unique key is what makes two
    servers never share an address, whatever the concurrency."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_int", name="uq_ports_subnet_ip"),
                      UniqueConstraint("mac_address", name="uq_ports_mac"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"))
    ip_address: Mapped[str] = mapped_column(String(45))
    ip_int: Mapped[int] = mapped_column(BigInteger)
    mac_address: Mapped[str] = mapped_column(String(17))
    device_id: Mapped[str] = mapped_column(String(36), index=True, default="")
    device_owner: Mapped[str] = mapped_column(String(64), default="")
    project_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QuotaLimit(Base):
    """A project's own limit for a resource; projects without one use the configured default."""

    __tablename__ = "quota_limits"

    project_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class Node(Base):
    """A bare-metal machine, enrolled through its BMC (Ironic's node). The BMC password is only
    stored encrypted (`bmc_password`); `driver_info` holds the rest of the BMC access. The
    conductor that works on a node holds `reservation` until `reserved_until`."""

    __tablename__ = "nodes"
    __table_args__ = (Index("ix_nodes_work", "provision_state", "reserved_until"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), unique=True)
    driver: Mapped[str] = mapped_column(String(32))
    driver_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    bmc_password: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    instance_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    role: Mapped[str] = mapped_column(String(16), default="compute")
    resource_class: Mapped[str | None] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(Text)
    provision_state: Mapped[str] = mapped_column(String(16), default="enroll")
    target_provision_state: Mapped[str | None] = mapped_column(String(16))
    provision_updated_at: Mapped[dt.datetime | None]
    power_state: Mapped[str | None] = mapped_column(String(16))
    target_power_state: Mapped[str | None] = mapped_column(String(16))
    power_checked_at: Mapped[dt.datetime | None]
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    maintenance_reason: Mapped[str | None] = mapped_column(Text)
    fault: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    bmc_failures: Mapped[int] = mapped_column(Integer, default=0)
    bmc_calls: Mapped[int] = mapped_column(Integer, default=0)
    reservation: Mapped[str | None] = mapped_column(String(255))
    reserved_until: Mapped[dt.datetime | None]
    join_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    join_secret: Mapped[str | None] = mapped_column(Text)
    media_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    host_name: Mapped[str | None] = mapped_column(String(255))
    inspection_started_at: Mapped[dt.datetime | None]
    inspection_finished_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PoolNode(Base):
    """A test node of the node pool: one server on one provider, from launch to deletion.
    `request_id` is set once the node is allocated to a request."""

    __tablename__ = "pool_nodes"
    __table_args__ = (Index("ix_pool_nodes_live", "state"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    label: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]
    ready_at: Mapped[dt.datetime | None]
    request_id: Mapped[str | None] = mapped_column(String(32))
    requestor: Mapped[str | None] = mapped_column(String(255))
    server_id: Mapped[str | None] = mapped_column(String(64))
    image_id: Mapped[str | None] = mapped_column(String(64))
    interface_ip: Mapped[str | None] = mapped_column(String(64))
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    username: Mapped[str] = mapped_column(String(64), default="root")
    key_name: Mapped[str | None] = mapped_column(String(255))
    host_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(Text)
    console: Mapped[str | None] = mapped_column(Text)


class PoolRequest(Base):
    """A node request: one entry per node wanted ({label, node, failures, avoid})."""

    __tablename__ = "pool_requests"
    __table_args__ = (Index("ix_pool_requests_state", "state"),
                      Index("ix_pool_requests_idempotency", "requestor", "idempotency_key"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    requestor: Mapped[str] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    # the client's Idempotency-Key: the same key (of the same requestor) is the same request
    idempotency_key: Mapped[str | None] = mapped_column(String(255))


class PoolCommand(Base):
    """A write sent to a standby pool process (pool/commands.py): queued until the active
    process takes it (`generation`: the pool lease's, when taken) and applies it with the
    records it changes, answering `status` and `result` (the API's answer) or `message`.
    `withdrawn`: the standby gave up waiting before any active process took it."""

    __tablename__ = "pool_commands"
    __table_args__ = (Index("ix_pool_commands_state", "state", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # queued, taken, done, withdrawn
    generation: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    done_at: Mapped[dt.datetime | None]


class PoolUpload(Base):
    """One upload of a local disk image to one provider."""

    __tablename__ = "pool_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    diskimage: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    external_name: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[dt.datetime]
    in_use: Mapped[bool] = mapped_column(Boolean, default=False)


class PoolProvider(Base):
    """What an operator set on a provider at run time (drained by `pool drain`)."""

    __tablename__ = "pool_providers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """Something that happened: a state change of a resource, an API write, an alert firing or
    resolving. Who (`actor`), when (`at`), where (`site`, `host`), what (`kind`, the resource,
    `source` → `target` through `action`, and `reason`). `id` orders events and is the cursor
    of `events --follow`."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_project", "project_id", "id"),
                      Index("ix_events_host", "host", "id"),
                      Index("ix_events_resource", "resource_id", "id"),
                      Index("ix_events_actor_id", "actor_id", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))  # state | api | alert
    site: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    resource_name: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class UsageRecord(Base):
    """One server's life for usage reports: the resources it held, on which host, from when it
    was created until its record was removed (`ended_at` None while it lives). Kept after the
    server is gone."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_span", "started_at", "ended_at"),)

    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(64))
    flavor: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]


class CapacitySample(Base):
    """What the site's hosts that took servers (up and enabled) held, every few minutes: the
    capacity line of the usage chart over time."""

    __tablename__ = "capacity_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    hosts: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[float]
    ram_mb: Mapped[float]
    disk_gb: Mapped[float]


class Alert(Base):
    """One alert: a rule about one subject (a host, a node, a flavor, the site). Firing until
    its condition clears, then resolved; a later firing starts a new row."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_state", "state", "key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255))  # rule:subject
    rule: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))  # critical | warning
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    summary: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Lease(Base):
    """One owner at a time for a named piece of work (store/leases.py): a background duty, a
    controller's heartbeat (`controller:<owner>`), the node pool's active seat. Held until
    `expires_at` unless renewed; `generation` is bumped each time the owner changes (a
    fencing number: work stamped with an older one was done under a lost lease)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))  # None: released
    expires_at: Mapped[dt.datetime]
    acquired_at: Mapped[dt.datetime]
    renewed_at: Mapped[dt.datetime]
    generation: Mapped[int] = mapped_column(Integer, default=1)
