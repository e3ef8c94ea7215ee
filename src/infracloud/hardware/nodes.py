"""Bare-metal nodes as the API sees them: enrol, list, show, change, delete, and the requests
(provision verbs, power, maintenance) that the conductor then carries out. Nothing here talks
to a BMC; `conductor.py` does. BMC passwords are stored encrypted and never leave this module
in clear except as a `BmcAccess` for the conductor."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.core.errors import BadRequest, Conflict, NotFound, Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import HardwareConfig
from infracloud.core.states import PROVISION
from infracloud.hardware.bmc import DRIVERS, BmcAccess
from infracloud.store import Database
from infracloud.store.models import Node

log = logging.getLogger(__name__)

PASSWORD_KEYS = ("bmc_password", "redfish_password", "ipmi_password")
DRIVER_ALIASES = {"fake-hardware": "fake", "ipmitool": "ipmi"}
# API provision targets -> state machine events (Ironic's verbs)
TARGETS = {"manage": "manage", "inspect": "inspect", "provide": "provide", "active": "deploy",
           "deploy": "deploy", "deleted": "undeploy", "undeploy": "undeploy", "abort": "abort"}
# the stable state each in-progress state heads for (the API's target_provision_state)
HEADING = {"verifying": "manageable", "inspecting": "manageable", "cleaning": "available",
           "deploying": "active", "wait call-back": "active", "deleting": "available"}
POWER_TARGETS = {"power on": "on", "power off": "off", "rebooting": "reboot",
                 "soft power off": "off", "soft rebooting": "reboot"}
DELETABLE = ("enroll", "manageable", "available", "inspect failed", "clean failed")
EDITABLE = ("name", "description", "driver_info", "properties", "extra", "instance_info",
            "resource_class", "role")
ROLES = ("compute", "controller")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class NodeQuery:
    provision_state: str | None = None
    maintenance: bool | None = None
    driver: str | None = None
    fault: str | None = None
    role: str | None = None
    limit: int | None = None
    marker: str | None = None


class NodeService:
    def __init__(self, db: Database, config: HardwareConfig, clock: Clock, box: SecretBox,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.box = box
        self.wake = wake  # tells the conductor there is new work

    # ---- BMC access --------------------------------------------------------------------------

    @staticmethod
    def split_driver_info(info: Any) -> tuple[dict[str, Any], str | None]:
        """The driver_info to store, and the password taken out of it (if given)."""
        if not isinstance(info, dict):
            raise BadRequest("driver_info must be an object.")
        clean = {k: v for k, v in info.items() if k not in PASSWORD_KEYS}
        passwords = [info[k] for k in PASSWORD_KEYS if info.get(k) is not None]
        if passwords and not isinstance(passwords[0], str):
            raise BadRequest("The BMC password must be a string.")
        return clean, (passwords[0] if passwords else None)

    def access(self, node: Node) -> BmcAccess:
        info = node.driver_info or {}
        password = self.box.decrypt(node.bmc_password) if node.bmc_password else ""
        options = dict(info.get("bmc_options") or {})
        if node.driver == "redfish":
            address = info.get("redfish_address") or info.get("bmc_address") or ""
            username = info.get("redfish_username") or info.get("bmc_username") or ""
            if info.get("redfish_system_id"):
                options["system_id"] = info["redfish_system_id"]
            if "redfish_verify_ca" in info:
                options["verify_ca"] = info["redfish_verify_ca"]
        elif node.driver == "ipmi":
            address = str(info.get("ipmi_address") or info.get("bmc_address") or "")
            if info.get("ipmi_port"):
                address = f"{address}:{info['ipmi_port']}"
            username = info.get("ipmi_username") or info.get("bmc_username") or ""
        else:
            address = info.get("bmc_address") or node.name or node.id
            username = info.get("bmc_username") or "admin"
        return BmcAccess(driver=node.driver, address=str(address), username=str(username),
                         password=password, options=options,
                         timeout=float(info.get("bmc_timeout") or self.config.bmc_timeout))

    # ---- read --------------------------------------------------------------------------------

    @staticmethod
    def _find(s: Session, ident: str, lock: bool = False) -> Node:
        q = select(Node).where(Node.id == ident if is_uuid(ident) else Node.name == ident)
        node = s.scalar(q.with_for_update() if lock else q)
        if node is None:
            raise NotFound(f"Node {ident} could not be found.")
        return node

    def get(self, ident: str) -> Node:
        with self.db.read() as s:
            return self._find(s, ident)

    def list_nodes(self, q: NodeQuery) -> tuple[list[Node], str | None]:
        stmt = select(Node)
        if q.provision_state:
            stmt = stmt.where(Node.provision_state == q.provision_state)
        if q.maintenance is not None:
            stmt = stmt.where(Node.maintenance == q.maintenance)
        if q.driver:
            stmt = stmt.where(Node.driver == DRIVER_ALIASES.get(q.driver, q.driver))
        if q.fault:
            stmt = stmt.where(Node.fault == q.fault)
        if q.role:
            stmt = stmt.where(Node.role == q.role)
        stmt = stmt.order_by(Node.created_at, Node.id)
        with self.db.read() as s:
            if q.marker:
                mark = s.get(Node, q.marker)
                if mark is None:
                    raise BadRequest(f"Marker {q.marker} could not be found.")
                stmt = stmt.where(or_(Node.created_at > mark.created_at,
                                      and_(Node.created_at == mark.created_at,
                                           Node.id > mark.id)))
            if q.limit is not None:
                stmt = stmt.limit(q.limit + 1)
            rows = list(s.scalars(stmt))
        if q.limit is not None and len(rows) > q.limit:
            return rows[:q.limit], rows[q.limit - 1].id
        return rows, None

    # ---- change ------------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> Node:
        driver = DRIVER_ALIASES.get(str(body.get("driver")), str(body.get("driver")))
        if driver not in DRIVERS:
            raise BadRequest(f"No valid host was found. Reason: No conductor service "
                             f"registered which supports driver {body.get('driver')}. "
                             f"Drivers: {', '.join(DRIVERS)}.")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name or is_uuid(name)):
            raise BadRequest(f"Expected a logical name but received {name}.")
        info, password = self.split_driver_info(body.get("driver_info") or {})
        role = (body.get("extra") or {}).get("role", body.get("role", "compute"))
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}.")
        now = self.clock.now()
        node = Node(id=str(body.get("uuid") or uuid.uuid4()), name=name, driver=driver,
                    driver_info=info, properties=dict(body.get("properties") or {}),
                    extra=dict(body.get("extra") or {}), instance_info={}, role=role,
                    resource_class=body.get("resource_class"),
                    description=body.get("description"), provision_state="enroll",
                    bmc_password=self.box.encrypt(password) if password else None,
                    maintenance=False, bmc_failures=0, bmc_calls=0, created_at=now,
                    updated_at=now, provision_updated_at=now)
        with self.db.write() as s:
            clash = s.scalar(select(Node.id).where(or_(Node.id == node.id, Node.name == name)))
            if clash is not None:
                raise Conflict(f"A node with name {name} or UUID {node.id} already exists.")
            s.add(node)
        log.info("node enrolled", extra={"node": node.id, "node_name": name, "driver": driver,
                                         "event": "node.create"})
        return node

    def update(self, ident: str, changes: dict[str, Any], removed: list[str]) -> Node:
        """`changes`: top-level field -> value, or (field, key) -> value for dict fields."""
        with self.db.write() as s:
            node = self._find(s, ident, lock=True)
            for key, value in changes.items():
                self._set(node, key, value)
            for key in removed:
                self._set(node, key, None, remove=True)
            node.updated_at = self.clock.now()
        return node

    def _set(self, node: Node, key: Any, value: Any, remove: bool = False) -> None:
        field, sub = key if isinstance(key, tuple) else (key, None)
        if field == "maintenance":
            node.maintenance = bool(value) and not remove
            return
        if field not in EDITABLE:
            raise BadRequest(f"'/{field}' is an internal attribute and can not be updated")
        if field == "role":
            if value not in ROLES:
                raise BadRequest(f"role must be one of {', '.join(ROLES)}.")
            node.role = value
        elif sub is None and field in ("name", "description", "resource_class"):
            setattr(node, field, None if remove else value)
        else:
            current = dict(getattr(node, field) or {})
            if sub is None:
                current = {} if remove else dict(value or {})
            elif remove:
                current.pop(sub, None)
            else:
                current[sub] = value
            if field == "driver_info":
                if node.provision_state in HEADING:
                    raise Conflict(f"Node {node.id} is {node.provision_state}: change its "
                                   f"driver_info when it has finished.")
                current, password = self.split_driver_info(current)
                if password is not None:
                    node.bmc_password = self.box.encrypt(password)
                elif sub in PASSWORD_KEYS and remove:
                    node.bmc_password = None
            setattr(node, field, current)

    def delete(self, ident: str) -> None:
        with self.db.write() as s:
            node = self._find(s, ident, lock=True)
            if node.provision_state not in DELETABLE and not node.maintenance:
                raise Conflict(f"Can not delete node {node.id} while it is in provision state "
                               f"\"{node.provision_state}\". Valid provision states to "
                               f"perform deletion are: {', '.join(DELETABLE)}, or set "
                               f"maintenance mode.")
            s.delete(node)

    def provision(self, ident: str, target: str, *, evict: bool = False) -> Node:
        event = TARGETS.get(target)
        if event is None:
            raise BadRequest(f"\"{target}\" is not a supported provision target; targets: "
                             f"{', '.join(sorted(TARGETS))}.")
        now = self.clock.now()
        with self.db.write() as s:
            node = self._find(s, ident, lock=True)
            if node.maintenance and event in ("provide", "deploy", "inspect"):
                raise BadRequest(f"Node {node.id} is in maintenance mode: {event} refused. "
                                 f"Reason: {node.maintenance_reason or 'none given'}.")
            if not PROVISION.allows(node.provision_state, event):
                raise BadRequest(f"The requested action \"{target}\" can not be performed on node "
                               f"\"{node.id}\" while it is in state "
                               f"\"{node.provision_state}\".")
            move(node, event, now)
            node.updated_at = now
            node.last_error = None
            if event == "undeploy":
                node.instance_info = {**(node.instance_info or {}), "evict": evict}
            if event == "abort":
                node.last_error = f"{target} requested by an operator"
                node.reservation = node.reserved_until = None
        log.info("node provision request", extra={"node": node.id, "event": "node." + event,
                                                  "state": node.provision_state})
        self.wake()
        return node

    def power(self, ident: str, target: str) -> Node:
        if target not in POWER_TARGETS:
            raise BadRequest(f"\"{target}\" is not a valid power target; targets: "
                             f"{', '.join(POWER_TARGETS)}.")
        with self.db.write() as s:
            node = self._find(s, ident, lock=True)
            if node.target_power_state:
                raise Conflict(f"Node {node.id} is locked: a power change to "
                               f"{node.target_power_state} is in progress.")
            if node.provision_state in HEADING:
                raise Conflict(f"Node {node.id} is {node.provision_state}: wait for it to "
                               f"finish before changing its power.")
            node.target_power_state = target
            node.updated_at = self.clock.now()
        self.wake()
        return node

    def set_maintenance(self, ident: str, on: bool, reason: str | None = None) -> Node:
        with self.db.write() as s:
            node = self._find(s, ident, lock=True)
            node.maintenance = on
            node.maintenance_reason = reason if on else None
            if not on:
                node.fault = None
                node.bmc_failures = 0
            node.updated_at = self.clock.now()
        log.info("node maintenance %s", "set" if on else "unset",
                 extra={"node": node.id, "event": "node.maintenance", "reason": reason})
        self.wake()
        return node

    # ---- deploy media and joining ------------------------------------------------------------

    def media(self, media_id: str) -> tuple[Node, str]:
        """The node deploying with this media and its join token (clear), for its config."""
        with self.db.read() as s:
            node = s.scalar(select(Node).where(Node.media_id == media_id))
        if node is None or node.provision_state not in ("deploying", "wait call-back") \
                or not node.join_secret:
            raise NotFound("No deploy media with this id.")
        return node, self.box.decrypt(node.join_secret)

    def joining(self, token: str) -> Node:
        """The node that was handed this join token, while it may still join."""
        with self.db.read() as s:
            return self._joining(s, token)

    @staticmethod
    def _joining(s: Session, token: str, lock: bool = False) -> Node:
        q = select(Node).where(Node.join_token_hash == token_hash(token))
        node = s.scalar(q.with_for_update() if lock else q)
        if node is None or node.provision_state not in ("wait call-back", "active"):
            raise Unauthorized("The join token is not valid (unknown, already used, used up "
                               "by an undeploy, or its deploy failed).")
        return node

    def joined(self, token: str, host_name: str | None) -> Node:
        """The machine joins: its join token is used up (once only: the node's compute host
        has its own credential from now on) and its deploy media no longer served."""
        now = self.clock.now()
        with self.db.write() as s:
            node = self._joining(s, token, lock=True)
            if node.provision_state == "wait call-back":
                move(node, "done", now)
            node.host_name = host_name
            node.join_token_hash = None
            node.join_secret = None
            node.media_id = None
            node.updated_at = now
        log.info("node joined", extra={"node": node.id, "host": host_name,
                                       "event": "node.active"})
        return node


def move(node: Node, event: str, now: dt.datetime) -> str:
    """The one way a node changes provision state: through the table. Returns the state it
    left."""
    before = node.provision_state
    node.provision_state = PROVISION.next(before, event)
    node.target_provision_state = HEADING.get(node.provision_state)
    node.provision_updated_at = now
    return before


def timeouts(config: HardwareConfig) -> dict[str, float]:
    out = {name: float(st.timeout) for name, st in PROVISION.states.items()
           if st.timeout is not None}
    out.update(config.timeouts)
    return out


def expired(node: Node, limits: dict[str, float], now: dt.datetime) -> bool:
    limit = limits.get(node.provision_state)
    return bool(limit and node.provision_updated_at and
                node.provision_updated_at + dt.timedelta(seconds=limit) < now)
