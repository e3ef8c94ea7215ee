"""Server groups' cost in placement: a multi-node job's three ci.8g servers created in one
request (max_count 3) into an anti-affinity group, as a ratio to the same request without a
group, in-process through the compute services on a SQLite file holding 148 hosts (the seeds'
vanilla and chocolate machines) or 1,480.

    .venv/bin/python bench/groups.py [--requests 200] [--hosts 148]

Each request runs in its own write transaction (quota lock, group row lock and its members'
hosts, three claims, three addresses); the servers are removed after each request, untimed, so
every request meets an empty site. Also reported: how many of the anti-affinity requests got
three distinct hosts (all must)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from infracloud.compute.flavors import FlavorService
from infracloud.compute.groups import ServerGroupService
from infracloud.compute.hosts import HostService, Registration
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.quotas import Quotas
from infracloud.compute.servers import CreateRequest, ServerService
from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig, NetworkConfig
from infracloud.network.service import NetworkService
from infracloud.store import Database
from infracloud.store.models import Instance

CALLER = Caller("u-bench", "p-bench", frozenset({"member", "reader"}))


class FoundImage:
    id = "11111111-2222-3333-4444-555555555555"
    status = "active"
    min_ram = 0
    min_disk = 0


def run(folder: Path, hosts: int, requests: int) -> dict[str, float]:
    db = Database(f"sqlite:///{folder / 'groups.db'}", pool_size=2)
    db.migrate()
    clock = Clock()
    config = ComputeConfig(quota=ComputeQuotaConfig(instances=-1, cores=-1, ram_mb=-1,
                                                    ports=-1, server_groups=-1,
                                                    server_group_members=-1),
                           network=NetworkConfig(cidr="10.200.0.0/16"))
    flavors = FlavorService(db, clock)
    flavors.ensure(config.flavors)
    quotas = Quotas(db, config.quota)
    network = NetworkService(db, config.network, clock, quotas.port_limit)
    network.ensure()
    servers = ServerService(db, config, clock, flavors, KeypairService(db, clock, 100), quotas,
                            network, lambda caller, image_id: FoundImage(), lambda _: None)
    host_service = HostService(db, config, clock, servers, lambda _: None)
    for n in range(hosts):
        host_service.register(Registration(name=f"h{n:05d}", driver="fake",
                                           vcpus=24 if n % 148 < 48 else 32,
                                           ram_mb=96 * 1024, disk_gb=1800))
    groups = ServerGroupService(db, clock, quotas)
    timings: dict[str, list[float]] = {"plain": [], "anti-affinity": []}
    distinct = 0
    for i in range(requests):
        for kind in ("plain", "anti-affinity"):
            group = groups.create(CALLER, f"g{i}", "anti-affinity").id if kind != "plain" \
                else None
            req = CreateRequest(name=f"job{i}", flavor_ref="ci.8g", image_ref=FoundImage.id,
                                count=3, group=group)
            t0 = time.perf_counter()
            made = servers.create_many(CALLER, req)
            timings[kind].append(time.perf_counter() - t0)
            if group:
                distinct += len({m.host_id for m in made if m.host_id}) == 3
            with db.write() as s:  # untimed: an empty site for the next request
                for m in made:
                    row = s.get(Instance, m.id)
                    if row is not None:
                        servers.remove(s, row)
    db.dispose()
    plain = statistics.median(timings["plain"])
    grouped = statistics.median(timings["anti-affinity"])
    return {"hosts": hosts, "plain_ms": plain * 1000, "group_ms": grouped * 1000,
            "ratio": plain / grouped, "distinct": distinct, "requests": requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--hosts", type=int, nargs="*", default=[148, 1480])
    args = parser.parse_args()
    print("| hosts | request of 3, no group (median ms) | into an anti-affinity group "
          "(median ms) | rate as a ratio to no group | requests with 3 distinct hosts |")
    print("| --- | --- | --- | --- | --- |")
    for hosts in args.hosts:
        with tempfile.TemporaryDirectory(prefix="infracloud-bench-groups-") as tmp:
            r = run(Path(tmp), hosts, args.requests)
        print(f"| {r['hosts']} | {r['plain_ms']:.2f} | {r['group_ms']:.2f} | "
              f"{r['ratio']:.2f} | {r['distinct']}/{r['requests']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
