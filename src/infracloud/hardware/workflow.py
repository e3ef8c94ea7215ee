"""Client-side workflows over the Bare Metal API, for `infracloud hardware` and the demo: enrol
an inventory (create -> manage -> inspect -> provide), deploy, undeploy. Each polls the node
list (one request for all nodes) and reports progress through a callback."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from infracloud.hardware.inventory import Inventory, MachineSpec

Call = Callable[..., Any]
SENDERS = 8  # requests in flight at once when starting work on many nodes
FAILED = ("inspect failed", "clean failed", "deploy failed", "error")
IN_USE = ("deploying", "wait call-back", "active", "deleting")  # enrolled long ago
POLL = 0.5
FIELDS = "uuid,name,provision_state,power_state,maintenance,last_error,fault," \
         "inspection_finished_at"


@dataclass
class Progress:
    total: int
    done: int = 0
    states: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why

    def summary(self) -> str:
        parts = [f"{n} {s}" for s, n in sorted(self.states.items())]
        return ", ".join(parts)


Report = Callable[[Progress], None]


def node_body(m: MachineSpec, site: str) -> dict[str, Any]:
    e = m.expected
    props: dict[str, Any] = {k: v for k, v in (("cpus", e.cpus), ("memory_mb", e.memory_mb),
                                               ("local_gb", e.disk_gb),
                                               ("cpu_arch", e.cpu_arch)) if v is not None}
    if m.macs:
        props["macs"] = m.macs
    extra: dict[str, Any] = {"role": m.role, "site": site}
    if m.ipv4_address:
        extra["ipv4_address"] = m.ipv4_address
    options = dict(m.bmc.options)
    if m.bmc.driver == "fake" and m.macs:  # a simulated machine has the listed NICs
        options.setdefault("macs", m.macs)
    return {"name": m.name, "driver": m.bmc.driver, "properties": props, "extra": extra,
            "driver_info": {"bmc_address": m.bmc.address, "bmc_username": m.bmc.username,
                            "bmc_password": m.bmc.resolved_password(),
                            "bmc_options": options}}


def _each(fn: Callable[[Any], Any], items: list[Any]) -> None:
    """fn(item) for every item, a few at a time (one request each: the controller does the
    work, this only asks)."""
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        list(pool.map(fn, items))


def set_state(call: Call, kind: str, targets: list[tuple[str, dict[str, Any]]]) -> None:
    """PUT /nodes/{name}/states/{kind} (provision or power) with each body, a few at once."""
    _each(lambda t: call("PUT", f"/baremetal/v1/nodes/{t[0]}/states/{kind}", json=t[1]),
          targets)


def list_nodes(call: Call, fields: str = FIELDS) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in call("GET", "/baremetal/v1/nodes",
                                       params={"fields": fields})["nodes"]}


def _watch(call: Call, names: list[str], step: Callable[[str, dict[str, Any]], str | None],
           report: Report, timeout: float, after: Callable[[], None] = lambda: None
           ) -> Progress:
    """Poll until every node is finished: `step` returns 'done', 'failed: why', or None
    (still going; it may ask for requests that move the node on, which `after` sends once
    the poll's nodes have all been looked at)."""
    progress = Progress(total=len(names))
    left = set(names)
    deadline = time.monotonic() + timeout
    while left:
        nodes = list_nodes(call)
        progress.states = Counter(nodes[n]["provision_state"] for n in names if n in nodes)
        for name in sorted(left):
            node = nodes.get(name)
            outcome = "failed: the node is gone" if node is None else step(name, node)
            if outcome is None:
                continue
            left.discard(name)
            progress.done += 1
            if outcome.startswith("failed"):
                progress.failed[name] = outcome.partition(": ")[2]
        after()
        report(progress)
        if left and time.monotonic() > deadline:
            for name in left:
                progress.failed[name] = f"not finished after {timeout:g} s"
            break
        if left:
            time.sleep(POLL)
    return progress


def _why(node: dict[str, Any]) -> str:
    if node.get("maintenance"):
        return f"in maintenance ({node.get('fault') or 'by an operator'}): " \
               f"{node.get('last_error') or ''}".rstrip(": ")
    return str(node.get("last_error") or node["provision_state"])


def enroll(call: Call, inventory: Inventory, report: Report, *, stop_at: str = "available",
           timeout: float = 3600) -> Progress:
    existing = list_nodes(call)
    _each(lambda m: call("POST", "/baremetal/v1/nodes", json=node_body(m, inventory.name)),
          [m for m in inventory.machines if m.name not in existing])
    asked: dict[str, str] = {}
    moves: list[tuple[str, str]] = []

    def move(name: str, target: str) -> None:  # sent after each poll, all together
        if asked.get(name) != target:
            asked[name] = target
            moves.append((name, target))

    def send() -> None:
        set_state(call, "provision", [(name, {"target": target}) for name, target in moves])
        moves.clear()

    def step(name: str, node: dict[str, Any]) -> str | None:
        state = node["provision_state"]
        if node.get("maintenance"):
            return "failed: " + _why(node)
        if state == stop_at or state in IN_USE or (state == "available" and
                                                   stop_at != "enroll"):
            return "done"
        if state == "enroll":
            if stop_at == "enroll":
                return "done"
            if asked.get(name) == "manage" and node.get("last_error"):
                return "failed: " + _why(node)
            move(name, "manage")
        elif state == "manageable":
            if not node.get("inspection_finished_at"):
                move(name, "inspect")
            elif stop_at == "manageable":
                return "done"
            else:
                move(name, "provide")
        elif state in FAILED:
            return "failed: " + _why(node)
        return None

    return _watch(call, [m.name for m in inventory.machines], step, report, timeout, send)


def deploy(call: Call, names: list[str], report: Report, timeout: float = 3600) -> Progress:
    set_state(call, "provision", [(name, {"target": "active"}) for name in names])

    def step(name: str, node: dict[str, Any]) -> str | None:
        state = node["provision_state"]
        if state == "active":
            return "done"
        if state in FAILED or state == "available" or node.get("maintenance"):
            return "failed: " + _why(node)
        return None

    return _watch(call, names, step, report, timeout)


def undeploy(call: Call, names: list[str], report: Report, *, evict: bool = False,
             timeout: float = 7200) -> Progress:
    set_state(call, "provision", [(name, {"target": "deleted", "evict": evict})
                                  for name in names])

    def step(name: str, node: dict[str, Any]) -> str | None:
        state = node["provision_state"]
        if state == "available":
            return "done"
        if state in FAILED:
            return "failed: " + _why(node)
        return None

    return _watch(call, names, step, report, timeout)
