"""The site on one screen: hosts by state, capacity used and free, free slots per flavor,
servers by state, bare-metal machines, the node pool's waiting requests, firing alerts, which
controller holds each background duty, and the latest events. One plain function over the
services (plus the pool when it runs in this process), read with a handful of aggregate
queries; `GET /ops/v1/status`, `infracloud status` and the dashboard all show what it
returns."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from infracloud import __version__
from infracloud.core.clock import Clock, as_utc, isoformat
from infracloud.core.states import PROVISION
from infracloud.hardware.capacity import fits
from infracloud.hardware.drain import FENCED
from infracloud.ops import alerting as al
from infracloud.ops import events as ev
from infracloud.site.alerts import stored
from infracloud.site.collectors import HOST_STATES, INSTANCE_STATES, POOL_NODE_STATES, RESOURCES
from infracloud.store import Database
from infracloud.store.models import Flavor, Host, Instance, Node

if TYPE_CHECKING:
    from infracloud.pool.service import PoolService
    from infracloud.site.backups import Backups
    from infracloud.site.services import Services

RECENT_EVENTS = 20
MACHINE_FAULTS = 50  # machines listed by name (the counts cover them all)
OPEN_REQUESTS = 50
# the capacity.py resource names of the columns, in RESOURCES' order
_CAPACITY_NAMES = dict(zip(RESOURCES, ("vcpus", "ram", "disk"), strict=True))
_FAILED_PROVISION = tuple(s.name for s in PROVISION.states.values() if s.failure)


def host_state(state: str, enabled: bool, disabled_reason: str | None) -> str:
    """up, down, disabled or fenced: what the metrics' infracloud_hosts counts (a disabled or
    fenced host takes no new servers, whatever its heartbeat)."""
    if enabled:
        return state
    return "fenced" if (disabled_reason or "").startswith(FENCED) else "disabled"


def site_status(services: Services, pool: PoolService | None = None,
                recent: int = RECENT_EVENTS) -> dict[str, Any]:
    config = services.config
    return {**gather(services.db, services.events, services.clock, site=config.site,
                     region=config.region, url=services.base_url, pool=pool, recent=recent,
                     backups=services.backups),
            **services.duties.status()}


def gather(db: Database, events: ev.EventLog | None, clock: Clock, *, site: str, region: str,
           url: str, pool: PoolService | None = None, recent: int = RECENT_EVENTS,
           backups: Backups | None = None) -> dict[str, Any]:
    now = clock.now()
    with db.read() as s:
        hosts = read_hosts(s)
        instances = instance_counts(s, now)
        machines = read_machines(s)
        alerts = firing_alerts(s, now)
    return {
        "site": site_view(site, region, url, now),
        **hosts,
        "instances": instances,
        "machines": machines,
        "pool": None if pool is None else pool_status(pool),
        "alerts": alerts,
        "backup": {"enabled": False} if backups is None else backups.status(now),
        "events": [] if events is None else [
            ev.to_dict(e) for e in events.query(ev.Query(limit=recent, newest_first=True))],
    }


def site_view(site: str, region: str, url: str, now: dt.datetime) -> dict[str, Any]:
    return {"name": site, "region": region, "version": __version__, "url": url,
            "generated_at": isoformat(now)}


def read_hosts(s: Session) -> dict[str, Any]:
    """`hosts` (by state, and a row per host), `capacity` and `flavors` (free slots)."""
    frees = (Host.free_vcpus, Host.free_ram_mb, Host.free_disk_gb)  # the scheduler's arithmetic
    rows = list(s.execute(select(
        Host.name, Host.state, Host.enabled, Host.disabled_reason, Host.availability_zone,
        Host.last_heartbeat, Host.id, Host.takes_servers, Host.used_vcpus, Host.used_ram_mb,
        Host.used_disk_gb, *frees).order_by(Host.name)))
    on_host = dict(s.execute(select(Instance.host_id, func.count())
                             .where(Instance.host_id.is_not(None))
                             .group_by(Instance.host_id)).all())
    flavors = list(s.scalars(select(Flavor).order_by(Flavor.vcpus, Flavor.ram_mb,
                                                     Flavor.name)))
    return _hosts(rows, on_host, flavors)


def instance_counts(s: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """By state; with `now`, also `expiring`: how many servers (not being deleted) have an
    expiry (compute/lifetimes.py) and when the next one is, in the same query."""
    rows = s.execute(select(Instance.state, func.count(), func.count(Instance.expires_at),
                            func.min(Instance.expires_at))
                     .group_by(Instance.state)).all()
    counts = {state: n for state, n, _, _ in rows}
    out: dict[str, Any] = {"total": sum(counts.values()),
                           "by_state": {st: int(counts.get(st, 0)) for st in INSTANCE_STATES}}
    if now is not None:
        live = [(n, first) for state, _, n, first in rows
                if state != "deleting" and n and first is not None]
        nxt = min((as_utc(first) for _, first in live), default=None)
        out["expiring"] = {"count": sum(n for n, _ in live), "next_at": isoformat(nxt),
                           "next_in": round((nxt - now).total_seconds(), 1) if nxt else None}
    return out


def read_machines(s: Session) -> dict[str, Any]:
    nodes = list(s.execute(select(Node.provision_state, Node.maintenance, func.count())
                           .group_by(Node.provision_state, Node.maintenance)))
    faulty = list(s.execute(
        select(Node.name, Node.id, Node.provision_state, Node.power_state, Node.fault,
               Node.maintenance, Node.maintenance_reason, Node.last_error, Node.host_name)
        .where(or_(Node.fault.is_not(None), Node.maintenance.is_(True),
                   Node.provision_state.in_(_FAILED_PROVISION)))
        .order_by(Node.name).limit(MACHINE_FAULTS)))
    return _machines(nodes, faulty)


def firing_alerts(s: Session, now: dt.datetime) -> list[dict[str, Any]]:
    return [al.view(a, now) for a in stored(s, al.FIRING)]


def _hosts(rows: list[Any], on_host: dict[str | None, int], flavors: list[Flavor]
           ) -> dict[str, Any]:
    by_state: Counter[str] = Counter()
    total = dict.fromkeys(RESOURCES, 0.0)
    used = dict.fromkeys(RESOURCES, 0.0)
    free = dict.fromkeys(RESOURCES, 0.0)
    slots = {f.id: [0, 0] for f in flavors}  # free now, total when empty
    grid = []
    for (name, state, enabled, reason, zone, heartbeat, host_id, schedulable,
         *numbers) in rows:
        label = host_state(state, enabled, reason)
        by_state[label] += 1
        use = dict(zip(RESOURCES, numbers[:3], strict=True))
        room = dict(zip(RESOURCES, numbers[3:], strict=True))
        size = {r: float(use[r]) + float(room[r]) for r in RESOURCES}
        for r in RESOURCES:
            total[r] += size[r]
            used[r] += float(use[r])
            if schedulable:
                free[r] += max(float(room[r]), 0.0)
        if schedulable:
            for f in flavors:
                now = fits({_CAPACITY_NAMES[r]: float(room[r]) for r in RESOURCES}, f)
                empty = fits({_CAPACITY_NAMES[r]: size[r] for r in RESOURCES}, f)
                slots[f.id][0] += min(now.values(), default=0)
                slots[f.id][1] += min(empty.values(), default=0)
        grid.append({"name": name, "state": label, "enabled": bool(enabled),
                     "disabled_reason": reason,
                     # why it takes no servers, in words (a fence's reason without its prefix)
                     "note": (reason or "").removeprefix(FENCED) if label != "up" else "",
                     "availability_zone": zone,
                     "last_heartbeat": isoformat(heartbeat),
                     "instances": int(on_host.get(host_id, 0)),
                     **{r: {"used": _number(use[r]), "total": _number(size[r])}
                        for r in RESOURCES}})
    return {
        "hosts": {"total": len(rows), "by_state": {st: by_state[st] for st in HOST_STATES},
                  "rows": grid},
        "capacity": {r: {"total": _number(total[r]), "used": _number(used[r]),
                         "free": _number(free[r]),
                         # room on hosts that take no servers now (down, disabled, fenced)
                         "unavailable": _number(max(total[r] - used[r] - free[r], 0.0))}
                     for r in RESOURCES},
        "flavors": [{"name": f.name, "vcpus": f.vcpus, "ram_mb": f.ram_mb,
                     "disk_gb": f.disk_gb, "free": slots[f.id][0], "total": slots[f.id][1]}
                    for f in flavors],
    }


def _machines(rows: list[Any], faulty: list[Any]) -> dict[str, Any]:
    by_state: Counter[str] = Counter()
    maintenance = 0
    for state, in_maintenance, count in rows:
        by_state[state] += count
        maintenance += count if in_maintenance else 0
    return {"total": sum(by_state.values()), "by_state": dict(sorted(by_state.items())),
            "maintenance": maintenance,
            "faults": [{"name": name or node_id, "id": node_id, "provision_state": state,
                        "power_state": power, "fault": fault, "maintenance": bool(maint),
                        "maintenance_reason": maint_reason, "last_error": last_error,
                        "host": host}
                       for (name, node_id, state, power, fault, maint, maint_reason,
                            last_error, host) in faulty]}


def pool_status(pool: PoolService) -> dict[str, Any]:
    """Requests waiting (how many, the oldest's age, by label), nodes by state, the labels
    and providers: from the pool engine's memory."""
    with pool.lock:
        now = pool.now()
        waiting = sorted((r for r in pool.requests.values() if not r.final),
                         key=lambda r: r.created_at)
        by_label = Counter(label for r in waiting for label in set(r.labels))
        nodes = Counter(n.state for n in pool.nodes.values())
        requests = [{"id": r.id, "requestor": r.requestor, "labels": r.labels,
                     "state": r.state, "priority": r.priority,
                     "created_at": isoformat(r.created_at),
                     "age_seconds": _age(now, r.created_at)} for r in waiting[:OPEN_REQUESTS]]
        labels = pool.list_labels()
        providers = [{k: p[k] for k in ("name", "state", "max_servers", "nodes",
                                        "drained_reason", "last_error")}
                     for p in pool.list_providers()]
    return {"name": pool.config.name, "requests_waiting": len(waiting),
            "oldest_wait_seconds": _age(now, waiting[0].created_at) if waiting else 0.0,
            "waiting_by_label": {label["name"]: by_label.get(label["name"], 0)
                                 for label in labels} | dict(by_label),
            "requests": requests,
            "nodes_by_state": {st: nodes[st] for st in POOL_NODE_STATES},
            "labels": labels, "providers": providers}


def _age(now: dt.datetime, then: dt.datetime) -> float:
    return round(max((now - then).total_seconds(), 0.0), 1)


def _number(value: Any) -> int | float:
    """Whole numbers as int (JSON reads better), fractions (ratios) kept."""
    f = float(value or 0)
    return int(f) if f.is_integer() else round(f, 2)
