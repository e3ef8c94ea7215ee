"""The site's provider network and its IPAM.

One network with one IPv4 subnet (seed 001: a provider network, no floating IPs, no security
groups). Every server gets exactly one port with one address. Addresses are handed out in
order from a cursor kept on the subnet and reused only after the cursor has wrapped around
the pool, so a deleted server's address is not given to the next server at once (stale SSH
known_hosts entries and ARP caches see a different machine later rather than sooner).
Uniqueness rests on the database: a unique key on (subnet, address), with the subnet row
locked while allocating; a clash still makes one transaction fail and retry."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.settings import NetworkConfig
from infracloud.store import Database
from infracloud.store.models import Instance, Network, Port, Subnet

log = logging.getLogger(__name__)
DEVICE_OWNER = "compute:nova"


class AddressesExhausted(Exception):
    pass


class PortQuotaExceeded(Exception):
    """The project has as many ports as its `port` quota allows (a server's port counts)."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"Quota exceeded for ports: Maximum number of ports exceeded "
                         f"(used {used} of {limit}).")
        self.used, self.limit = used, limit


PortLimit = Callable[[Session, str], int]  # (session, project) → limit, -1: unlimited


class NetworkService:
    def __init__(self, db: Database, config: NetworkConfig, clock: Clock,
                 port_limit: PortLimit | None = None) -> None:
        """`port_limit`: the projects' port quota (compute.quotas); None: no limit."""
        self.db = db
        self.port_limit = port_limit
        self.config = config
        self.clock = clock
        self.network: Network | None = None
        self.subnet: Subnet | None = None

    def ensure(self) -> None:
        """Create the provider network and subnet on first start; load them."""
        c = self.config
        net = ipaddress.ip_network(c.cidr)
        hosts = list(_bounds(net))
        start = int(ipaddress.ip_address(c.pool_start)) if c.pool_start else hosts[0] + 1
        end = int(ipaddress.ip_address(c.pool_end)) if c.pool_end else hosts[1]
        with self.db.write() as s:
            network = s.scalar(select(Network).where(Network.name == c.name))
            if network is None:
                network = Network(id=str(uuid.uuid4()), name=c.name, mtu=c.mtu,
                                  created_at=self.clock.now())
                s.add(network)
                s.flush()
                s.add(Subnet(id=str(uuid.uuid4()), network_id=network.id, name=f"{c.name}-v4",
                             cidr=str(net), gateway_ip=c.gateway, pool_start=start,
                             pool_end=end, dns=list(c.dns), created_at=self.clock.now()))
            subnet = s.scalar(select(Subnet).where(Subnet.network_id == network.id))
        self.network, self.subnet = network, subnet
        if subnet is not None and subnet.cidr != str(net):
            log.warning("the provider subnet keeps %s; the configured %s is not applied to an "
                        "existing site", subnet.cidr, net)

    @property
    def prefix(self) -> int:
        assert self.subnet is not None
        return ipaddress.ip_network(self.subnet.cidr).prefixlen

    # ---- IPAM (inside the caller's write transaction) ----------------------------------------

    def allocate(self, s: Session, device_id: str, project_id: str,
                 device_owner: str = DEVICE_OWNER) -> Port:
        assert self.subnet is not None and self.network is not None
        # the subnet row is the allocation cursor; locking it serialises allocations
        sub = s.get(Subnet, self.subnet.id, with_for_update=True)
        assert sub is not None
        self._check_quota(s, project_id)  # after the lock: allocations are serial
        start = sub.next_ip if sub.next_ip and sub.pool_start <= sub.next_ip <= sub.pool_end \
            else sub.pool_start
        candidate = self._free_from(s, sub, start)
        sub.next_ip = candidate + 1
        port = Port(id=str(uuid.uuid4()), network_id=self.network.id, subnet_id=sub.id,
                    ip_int=candidate, ip_address=str(ipaddress.ip_address(candidate)),
                    mac_address=_random_mac(), device_id=device_id, device_owner=device_owner,
                    project_id=project_id, status="DOWN", created_at=self.clock.now())
        s.add(port)
        s.flush()  # the unique keys are checked here
        return port

    def _check_quota(self, s: Session, project_id: str) -> None:
        limit = -1 if self.port_limit is None else self.port_limit(s, project_id)
        if limit < 0:
            return
        used = self._count(s, project_id)
        if used >= limit:
            raise PortQuotaExceeded(used, limit)

    @staticmethod
    def _count(s: Session, project_id: str) -> int:
        return int(s.scalar(select(func.count()).select_from(Port).where(
            Port.project_id == project_id)) or 0)

    @staticmethod
    def _free_from(s: Session, sub: Subnet, start: int) -> int:
        """The first free address at or after `start`, wrapping to the pool's start."""
        for low, high in ((start, sub.pool_end), (sub.pool_start, start - 1)):
            expected = low
            for ip in s.scalars(select(Port.ip_int).where(
                    Port.subnet_id == sub.id, Port.ip_int >= low, Port.ip_int <= high
            ).order_by(Port.ip_int)):
                if ip != expected:
                    return expected
                expected += 1
            if expected <= high:
                return expected
        raise AddressesExhausted(f"No more IP addresses available on network {sub.name}.")

    def hold(self, s: Session, device_id: str, ip: str | None, mac: str | None,
             device_owner: str) -> str | None:
        """Give `device_id` a port with the address (and MAC) it already has, one no project
        owns (a server running on a host that the database does not know). None when held;
        else why it cannot be: the address is not the pool's, or another port has it."""
        assert self.subnet is not None and self.network is not None
        if not ip:
            return "its address is not known"
        try:
            ip_int = int(ipaddress.ip_address(ip))
        except ValueError:
            return f"{ip!r} is not an address"
        sub = s.get(Subnet, self.subnet.id, with_for_update=True)  # serialises with allocate
        assert sub is not None
        if not sub.pool_start <= ip_int <= sub.pool_end:
            return f"its address {ip} is outside the pool of network {self.network.name}"
        other = s.scalar(select(Port.device_id).where(Port.subnet_id == sub.id,
                                                      Port.ip_int == ip_int))
        if other is not None:
            return f"its address {ip} is another port's (device {other or 'none'})"
        if not mac or s.scalar(select(Port.id).where(Port.mac_address == mac)) is not None:
            mac = _random_mac()
        s.add(Port(id=str(uuid.uuid4()), network_id=self.network.id, subnet_id=sub.id,
                   ip_int=ip_int, ip_address=str(ipaddress.ip_address(ip_int)),
                   mac_address=mac, device_id=device_id, device_owner=device_owner,
                   project_id=None, status="ACTIVE", created_at=self.clock.now()))
        s.flush()
        return None

    def release(self, s: Session, device_id: str) -> None:
        s.execute(delete(Port).where(Port.device_id == device_id))

    def set_status(self, s: Session, device_id: str, status: str) -> None:
        for port in s.scalars(select(Port).where(Port.device_id == device_id)):
            port.status = status

    # ---- the API's reads -------------------------------------------------------------------

    def networks(self) -> list[Network]:
        with self.db.read() as s:
            return list(s.scalars(select(Network).order_by(Network.name)))

    def subnets(self) -> list[Subnet]:
        with self.db.read() as s:
            return list(s.scalars(select(Subnet).order_by(Subnet.name)))

    def ports(self, caller: Caller, filters: dict[str, Any]) -> list[Port]:
        q = select(Port).order_by(Port.created_at, Port.id)
        if not caller.is_admin:
            q = q.where(Port.project_id == caller.project_id)
        for key in ("device_id", "network_id", "status", "device_owner", "mac_address", "id"):
            if filters.get(key) is not None:
                q = q.where(getattr(Port, key) == filters[key])
        with self.db.read() as s:
            return list(s.scalars(q))

    def port(self, caller: Caller, port_id: str) -> Port:
        with self.db.read() as s:
            port = s.get(Port, port_id)
        if port is None or not (caller.is_admin or port.project_id == caller.project_id):
            raise NotFound(f"Port {port_id} could not be found.")
        return port

    def create_port(self, caller: Caller, network_id: str, device_id: str = "",
                    device_owner: str = "") -> Port:
        """A port made through the API (not by a server): DOWN, an address from the pool, in
        the caller's project. Nothing uses it until it is deleted."""
        if caller.project_id is None:
            raise Forbidden("Creating a port needs a project-scoped token.")
        if self.network is None or network_id != self.network.id:
            raise NotFound(f"Network {network_id} could not be found.")
        if device_id and not caller.is_admin:
            self._check_device(caller.project_id, device_id)
        for _attempt in range(8):
            try:
                with self.db.write() as s:
                    port = self.allocate(s, device_id, caller.project_id, device_owner)
                break
            except IntegrityError:  # another controller took the same address: again
                continue
            except AddressesExhausted as exc:
                raise Conflict(str(exc)) from None
            except PortQuotaExceeded:  # Neutron's answer, word for word
                raise Conflict("Quota exceeded for resources: ['port'].") from None
        else:
            raise BadRequest("Could not allocate an address; try again.")
        log.info("port created", extra={"event": "port.create", "port_id": port.id,
                                        "project_id": caller.project_id})
        return port

    def _check_device(self, project_id: str, device_id: str) -> None:
        """A port may name only its own project's server as its device."""
        with self.db.read() as s:
            owner = s.scalar(select(Instance.project_id).where(Instance.id == device_id))
        if owner is not None and owner != project_id:
            raise Forbidden(f"Device {device_id} belongs to another project.")

    def delete_port(self, caller: Caller, port_id: str) -> None:
        """Only ports no server uses any more (nodepool cleans up DOWN ports it finds)."""
        with self.db.write() as s:
            port = s.get(Port, port_id)
            if port is None or not (caller.is_admin or port.project_id == caller.project_id):
                raise NotFound(f"Port {port_id} could not be found.")
            if port.status == "ACTIVE":
                raise Forbidden(f"Port {port_id} is in use by server {port.device_id}; delete "
                                f"the server instead.")
            s.delete(port)

    def usage(self, project_id: str) -> int:
        with self.db.read() as s:
            return self._count(s, project_id)


def _bounds(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """First and last usable addresses."""
    first, last = int(net.network_address), int(net.broadcast_address)
    return first + 1, last - 1


def _random_mac() -> str:
    tail = secrets.token_bytes(3)
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in tail)
