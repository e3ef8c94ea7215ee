"""Servers: create (quota, scheduling and addressing in one transaction), list, show, delete,
console and metadata. What the compute hosts do with them is in compute/hosts.py."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from infracloud.compute import groups, reserved_meta, scheduler
from infracloud.compute.flavors import FlavorService
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.multicreate import new_reservation_id
from infracloud.compute.namefilter import name_filter
from infracloud.compute.quotas import Quotas
from infracloud.compute.server_checks import (
    DEFAULT_METADATA_ITEMS,
    check_counts,
    check_metadata_quota,
    check_name,
)
from infracloud.compute.server_filters import ServerFilters
from infracloud.core.clock import Clock, isoformat
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.settings import ComputeConfig
from infracloud.core.states import INSTANCE
from infracloud.network.service import AddressesExhausted, NetworkService, PortQuotaExceeded
from infracloud.ops import metrics
from infracloud.store import Database
from infracloud.store.db import after_commit
from infracloud.store.models import Host, Instance
from infracloud.store.wakeups import bump, wake

log = logging.getLogger(__name__)
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
MAX_METADATA = DEFAULT_METADATA_ITEMS


class ImageLookup(Protocol):
    def __call__(self, caller: Caller, image_id: str) -> Any: ...


@dataclass
class CreateRequest:
    name: str
    flavor_ref: str
    image_ref: str | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None
    config_drive: bool = True
    networks: list[dict[str, Any]] | str | None = None
    count: int = 1  # max_count: as many as the quota allows up to this
    min_count: int | None = None  # fewer than this fit the quota: 403, nothing is created
    group: str | None = None  # the scheduler hint `group`: a server group's id
    reservation_id: str | None = None  # given to every server of the request
    access_ipv4: str | None = None
    access_ipv6: str | None = None


def fault(code: int, message: str, now: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "created": isoformat(now)}


def check_metadata(meta: Any) -> dict[str, str]:
    """Keys and values (how many a server may have is its project's quota: metadata_limit)."""
    if not isinstance(meta, dict):
        raise BadRequest("Invalid input for field/attribute metadata: must be an object.")
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str) or not 0 < len(k) <= 255 or len(
                v) > 255:
            raise BadRequest(f"Invalid metadata item {k!r}: keys and values are strings of at "
                             f"most 255 characters.")
    return dict(meta)


class ServerService:
    def __init__(self, db: Database, config: ComputeConfig, clock: Clock,
                 flavors: FlavorService, keypairs: KeypairService, quotas: Quotas,
                 network: NetworkService, find_image: ImageLookup,
                 notify: Callable[[str], None]) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.flavors = flavors
        self.keypairs = keypairs
        self.quotas = quotas
        self.network = network
        self.find_image = find_image
        self.notify = notify
        # called in the create's transaction with the new servers and their flavor
        self.on_place: Callable[[Session, list[Instance], Any], None] | None = None

    # ---- create ------------------------------------------------------------------------------

    def create(self, caller: Caller, req: CreateRequest) -> Instance:
        """One server, or the first of those a multi-create made (nova's answer)."""
        return self.create_many(caller, req)[0]

    def create_many(self, caller: Caller, req: CreateRequest) -> list[Instance]:
        """`req.count` servers (max_count), or as many as the quota allows down to
        `req.min_count`, named `<name>-1`, `<name>-2`... when there are several (nova's
        names); all placed in one transaction, or all ERROR (No valid host) as nova's
        scheduler fails a request it cannot place whole."""
        if caller.project_id is None:
            raise BadRequest("Creating a server needs a project-scoped token.")
        check_name(req.name)
        low, _ = check_counts(req.count if req.min_count is None else req.min_count, req.count)
        if req.group is not None:
            groups.check_hint(req.group)
        meta = check_metadata(req.metadata)
        reserved_meta.refuse(meta)
        if req.user_data is not None:
            if not isinstance(req.user_data, str) or len(req.user_data) > 65535:
                raise BadRequest("User data must be base 64 text of at most 65535 characters.")
            try:  # wrapped over several lines is fine, as in nova
                base64.b64decode("".join(req.user_data.split()), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("User data needs to be valid base 64.") from None
        try:
            flavor = self.flavors.get_visible(caller, req.flavor_ref)
        except NotFound:
            raise BadRequest(f"Flavor {req.flavor_ref} could not be found.") from None
        image_id = None
        if req.image_ref:
            try:
                image = self.find_image(caller, req.image_ref)
            except NotFound:
                raise BadRequest(f"Image {req.image_ref} could not be found.") from None
            if image.status != "active":
                raise BadRequest(f"Image {req.image_ref} is not active.")
            if image.min_ram and image.min_ram > flavor.ram_mb:
                raise BadRequest("Flavor's memory is too small for requested image.")
            if image.min_disk and flavor.disk_gb and image.min_disk > flavor.disk_gb:
                raise BadRequest("Flavor's disk is too small for requested image.")
            image_id = image.id
        else:
            raise BadRequest("An image is required: boot from volume is not supported.")
        key_data = None
        if req.key_name:
            try:
                key_data = self.keypairs.get(caller, req.key_name).public_key
            except NotFound:
                raise BadRequest("Invalid key_name provided.") from None
        zone, _, pin = (req.availability_zone or "").partition(":")
        if pin and not caller.is_admin:
            raise Forbidden("Only administrators can choose the host (zone:host).")
        az = zone or None
        if az and az not in self.availability_zones():
            raise BadRequest(f"The requested availability zone is not available: {az}")
        self._check_networks(req.networks)
        if req.reservation_id is None:
            req = dataclasses.replace(req, reservation_id=new_reservation_id())
        for _attempt in range(8):
            try:
                made = self._place(caller, req, flavor, image_id, key_data, meta, az,
                                   pin or None, low)
                break
            except IntegrityError:  # another controller took the same address: again
                continue
        else:
            raise BadRequest("Could not allocate an address; try again.")
        for instance in made:
            log.info("server created", extra={"instance_id": instance.id, "event":
                                              "server.create", "host_id": instance.host_id,
                                              "state": instance.state, "project_id":
                                              caller.project_id, "user_id": caller.user_id})
        return made

    def _check_networks(self, networks: Any) -> None:
        if networks in (None, "auto", "none") or networks == []:
            return
        if not isinstance(networks, list):
            raise BadRequest("Invalid input for field/attribute networks.")
        net = self.network.network
        assert net is not None
        for item in networks:
            if not isinstance(item, dict):
                raise BadRequest("Invalid input for field/attribute networks.")
            if item.get("port"):
                raise BadRequest("Booting with a pre-made port is not supported.")
            if item.get("fixed_ip"):
                raise BadRequest("Choosing a fixed IP is not supported.")
            if item.get("uuid") not in (net.id, None):
                raise BadRequest(f"Network {item.get('uuid')} could not be found.")

    def _place(self, caller: Caller, req: CreateRequest, flavor: Any, image_id: str,
               key_data: str | None, meta: dict[str, str], az: str | None,
               pin: str | None = None, low: int = 1) -> list[Instance]:
        now = self.clock.now()
        assert caller.project_id is not None
        with self.db.write() as s:
            self.quotas.lock(s, caller.project_id)
            room = self.quotas.headroom(s, caller.project_id, cores=flavor.vcpus,
                                        ram=flavor.ram_mb)
            count = req.count if room is None else max(min(req.count, room), low)
            # fewer than min_count fit: nova's 403 for them (nothing is created)
            self.quotas.check(s, caller.project_id, count=count, cores=flavor.vcpus * count,
                              ram=flavor.ram_mb * count)
            check_metadata_quota(len(meta), self.metadata_limit(s, caller.project_id))
            group = groups.placement(s, self.quotas, caller, req.group, count) if (
                req.group) else None
            made: list[Instance] = []
            for index in range(count):
                name = req.name if count == 1 else f"{req.name}-{index + 1}"
                made.append(Instance(
                    id=str(uuid.uuid4()), name=name, project_id=caller.project_id,
                    user_id=caller.user_id, flavor_id=flavor.id, image_id=image_id,
                    key_name=req.key_name, key_data=key_data, availability_zone=az,
                    state="scheduling", vcpus=flavor.vcpus, ram_mb=flavor.ram_mb,
                    disk_gb=flavor.disk_gb, metadata_=dict(meta), user_data=req.user_data,
                    config_drive=req.config_drive, created_at=now, updated_at=now,
                    state_changed_at=now, reservation_id=req.reservation_id,
                    server_group_id=group.group_id if group else None,
                    access_ipv4=req.access_ipv4, access_ipv6=req.access_ipv6))
            hosts: list[Host] = []
            for _inst in made:
                host = scheduler.claim(
                    s, scheduler.Request(flavor.vcpus, flavor.ram_mb, flavor.disk_gb, az, pin,
                                         only_hosts=group.only() if group else (),
                                         avoid_hosts=group.avoid() if group else ()),
                    now=now, down_after=self.config.host_down_after,
                    strategy=self.config.scheduler)
                if host is None:
                    break
                hosts.append(host)
                if group:
                    group.placed(host.id)
            if self.on_place is not None:  # their lifetimes (compute/lifetimes.py)
                self.on_place(s, made, flavor)
            if len(hosts) < count:  # as nova: a request placed in part is not placed
                for host in hosts:
                    scheduler.release(s, host.id, flavor.vcpus, flavor.ram_mb, flavor.disk_gb)
                for inst in made:
                    self._to(inst, "no_host", now)
                    inst.fault = fault(500, NO_VALID_HOST, now)
                    after_commit(s, functools.partial(metrics.server_failed, "no_valid_host"))
            else:
                for inst, host in zip(made, hosts, strict=True):
                    self._network(s, caller.project_id, inst, host, flavor, now)
            s.add_all(made)
        return made

    def _network(self, s: Session, project_id: str, inst: Instance, host: Host, flavor: Any,
                 now: Any) -> None:
        inst.host_id = host.id
        inst.availability_zone = host.availability_zone
        self._to(inst, "scheduled", now)
        try:
            port = self.network.allocate(s, inst.id, project_id)
        except PortQuotaExceeded as exc:  # nothing of this transaction stays
            raise Forbidden(str(exc)) from None
        except AddressesExhausted as exc:
            scheduler.release(s, host.id, flavor.vcpus, flavor.ram_mb, flavor.disk_gb)
            inst.host_id = None
            self._to(inst, "fail", now)
            inst.fault = fault(500, str(exc), now)
            after_commit(s, functools.partial(metrics.server_failed, "no_address"))
        else:
            inst.ip_address, inst.mac_address = port.ip_address, port.mac_address
            inst.network_name = self.network.config.name
            self._to(inst, "networked", now)
            wake(s, host.id, self.notify)  # its agent, on any controller

    @staticmethod
    def _to(inst: Instance, event: str, now: Any) -> None:
        inst.state = INSTANCE.next(inst.state, event)
        inst.state_changed_at = now
        inst.updated_at = now

    # ---- read --------------------------------------------------------------------------------

    @staticmethod
    def _owned(s: Session, caller: Caller, server_id: str, lock: bool = False) -> Instance:
        """The server if the caller may see it (its project, or an admin); else 404."""
        inst = s.get(Instance, server_id, with_for_update=lock)
        if inst is None or not (caller.is_admin or inst.project_id == caller.project_id):
            raise NotFound(f"Instance {server_id} could not be found.")
        return inst

    def get(self, caller: Caller, server_id: str) -> Instance:
        with self.db.read() as s:
            return self._owned(s, caller, server_id)

    def list_servers(self, caller: Caller, *, name: str | None = None,
                     status: str | None = None,
             limit: int | None = None, marker: str | None = None, all_projects: bool = False,
             project_id: str | None = None, host_id: str | None = None,
             reservation_id: str | None = None, filters: ServerFilters | None = None,
             locked: bool | None = None) -> tuple[list[Instance], str | None]:
        """A page of servers (newest first) and the marker of the next page, if any."""
        q = select(Instance)
        if not (caller.is_admin and (all_projects or project_id)):
            q = q.where(Instance.project_id == caller.project_id)
        elif project_id:
            q = q.where(Instance.project_id == project_id)
        if host_id and caller.is_admin:
            q = q.where(Instance.host_id == host_id)
        if reservation_id:
            q = q.where(Instance.reservation_id == reservation_id)
        q = q.order_by(Instance.created_at.desc(), Instance.id.desc())
        names = name_filter(name) if name else None
        if names is not None and names.literal is not None:
            # a plain substring, in SQL too (SQLite's LIKE ignores case: searched again below)
            q = q.where(Instance.name.contains(names.literal, autoescape=True))
        if status is not None:
            q = q.where(status_is(status.upper()))
        if locked is not None:
            q = q.where(Instance.locked_by.is_not(None) if locked else
                        Instance.locked_by.is_(None))
        if filters is not None:
            q = filters.where(q)
        exact = names is None and (filters is None or filters.exact)
        with self.db.read() as s:
            if marker:
                mark = s.get(Instance, marker)
                if mark is None:
                    raise BadRequest(f"marker [{marker}] not found")
                q = q.where(or_(Instance.created_at < mark.created_at,
                                and_(Instance.created_at == mark.created_at,
                                     Instance.id < mark.id)))
            if limit is not None and exact:
                q = q.limit(limit + 1)
            rows = []
            for r in s.scalars(q.execution_options(yield_per=500)):
                if (names is None or names.matches(r.name)) and (filters is None
                                                                 or filters.matches(r)):
                    rows.append(r)
                    if limit is not None and len(rows) > limit:
                        break  # one past the page: there is a next one
        if limit is not None and len(rows) > limit:
            return rows[:limit], (rows[limit - 1].id if limit else None)
        return rows, None

    def console(self, caller: Caller, server_id: str, length: int | None) -> str:
        text = self.get(caller, server_id).console or ""
        if length is not None and length >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-length:]) if length else ""
        return text

    # ---- change ------------------------------------------------------------------------------

    def delete(self, caller: Caller, server_id: str) -> None:
        """Servers on a live host go to `deleting` until its agent has destroyed them; others
        (never placed, or on a host that is down) are removed at once: an agent coming back
        destroys what it should no longer run."""
        now = self.clock.now()
        try:
            with self.db.write() as s:
                inst = self._owned(s, caller, server_id)
                if inst.locked_by and not caller.is_admin:  # nova's check_instance_lock
                    raise Conflict(f"Instance {inst.id} is locked")
                host = s.get(Host, inst.host_id) if inst.host_id else None
                if host is None or host.state != "up":
                    self.remove(s, inst)
                else:
                    # the host's row first, then the instance's (written at the commit): the
                    # order an agent's report locks them in; the other order deadlocks with it
                    bump(s, [host.id], self.notify)
                    self._to(inst, "delete", now)
        except StaleDataError:
            # its host's agent removed it meanwhile (the instance is not locked before the
            # host: reports lock the host first, then the instance)
            raise NotFound(f"Instance {server_id} could not be found.") from None
        log.info("server deleted", extra={"instance_id": server_id, "event": "server.delete",
                                          "user_id": caller.user_id})

    def remove(self, s: Session, inst: Instance) -> None:
        """The record goes, with its claim on the host and its address."""
        if inst.host_id:
            scheduler.release(s, inst.host_id, inst.vcpus, inst.ram_mb, inst.disk_gb)
        self.network.release(s, inst.id)
        s.delete(inst)

    def set_metadata(self, caller: Caller, server_id: str, meta: Any, *, replace: bool
                     ) -> dict[str, str]:
        items = check_metadata(meta)
        reserved_meta.refuse(items)
        with self.db.write() as s:
            inst = self._owned(s, caller, server_id, lock=True)
            if inst.locked_by and not caller.is_admin:  # nova's check_instance_lock
                raise Conflict(f"Instance {inst.id} is locked")
            merged = {**reserved_meta.controllers(inst.metadata_), **items} if replace else {
                **inst.metadata_, **items}
            check_metadata(merged)
            check_metadata_quota(reserved_meta.owners_count(merged),
                                 self.metadata_limit(s, inst.project_id))
            inst.metadata_ = merged
            inst.updated_at = self.clock.now()
            return dict(merged)

    def metadata_limit(self, s: Session, project_id: str) -> int:
        """The project's metadata_items quota (nova's default, 128, unless it has its own)."""
        return self.quotas.limits(s, project_id).get("metadata_items", MAX_METADATA)

    def delete_metadata(self, caller: Caller, server_id: str, key: str) -> None:
        reserved_meta.refuse([key])
        with self.db.write() as s:
            inst = self._owned(s, caller, server_id, lock=True)
            if inst.locked_by and not caller.is_admin:  # nova's check_instance_lock
                raise Conflict(f"Instance {inst.id} is locked")
            if key not in inst.metadata_:
                raise NotFound(f"Metadata item was not found: {key}")
            inst.metadata_ = {k: v for k, v in inst.metadata_.items() if k != key}

    def availability_zones(self) -> list[str]:
        with self.db.read() as s:
            zones = set(s.scalars(select(Host.availability_zone).distinct()))
        return sorted(zones | set(self.config.availability_zones))


STATUS = {"scheduling": "BUILD", "networking": "BUILD", "spawning": "BUILD",
          "active": "ACTIVE", "error": "ERROR", "deleted": "DELETED",
          # server actions (compute.actions), as nova shows them
          "stopping": "ACTIVE", "shutoff": "SHUTOFF", "starting": "SHUTOFF",
          "rebooting": "REBOOT", "rebooting_hard": "HARD_REBOOT", "rebuilding": "REBUILD",
          "rebuilding_off": "REBUILD", "snapshotting": "ACTIVE", "snapshotting_off": "SHUTOFF"}
VM_STATE = {"scheduling": "building", "networking": "building", "spawning": "building",
            "active": "active", "error": "error", "deleted": "deleted",
            "stopping": "active", "shutoff": "stopped", "starting": "stopped",
            "rebooting": "active", "rebooting_hard": "active", "rebuilding": "rebuilding",
            "rebuilding_off": "rebuilding", "snapshotting": "active", "snapshotting_off": "stopped"}
TASK_STATE = {"scheduling": "scheduling", "networking": "networking", "spawning": "spawning",
              "deleting": "deleting", "stopping": "powering-off", "starting": "powering-on",
              "rebooting": "rebooting", "rebooting_hard": "rebooting_hard",
              "rebuilding": "rebuilding", "rebuilding_off": "rebuilding",
              "snapshotting": "image_snapshot",
              "snapshotting_off": "image_snapshot"}


def api_status(inst: Instance) -> str:
    if inst.state == "deleting":
        return "ACTIVE" if inst.launched_at and not inst.fault else (
            "ERROR" if inst.fault else "BUILD")
    return STATUS[inst.state]


def status_is(status: str) -> ColumnElement[bool]:
    """`api_status(inst) == status` in SQL (a server's fault, once set, is never emptied)."""
    deleting = Instance.state == "deleting"
    direct = Instance.state.in_([k for k, v in STATUS.items() if v == status])
    if status == "ACTIVE":
        return or_(direct, and_(deleting, Instance.launched_at.is_not(None),
                                Instance.fault.is_(None)))
    if status == "ERROR":
        return or_(direct, and_(deleting, Instance.fault.is_not(None)))
    if status == "BUILD":
        return or_(direct, and_(deleting, Instance.launched_at.is_(None),
                                Instance.fault.is_(None)))
    return direct


def task_state(inst: Instance) -> str | None:
    return TASK_STATE.get(inst.state)


def power_state(inst: Instance) -> int:
    """Nova's power states: 1 running, 4 shut down, 0 none (building, failed)."""
    if inst.state in ("shutoff", "starting", "snapshotting_off"):
        return 4
    return 1 if api_status(inst) in ("ACTIVE", "REBOOT", "HARD_REBOOT", "REBUILD") else 0


def vm_state(inst: Instance) -> str:
    if inst.state == "deleting":
        return "error" if inst.fault else ("active" if inst.launched_at else "building")
    return VM_STATE[inst.state]
