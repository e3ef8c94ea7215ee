"""The services of one controller, built from its configuration. The API and the CLI take what
they need from here; nothing here knows about HTTP."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from infracloud.compute.credentials import HostCredentials
from infracloud.compute.flavor_access import FlavorAccess
from infracloud.compute.flavors import FlavorService
from infracloud.compute.groups import ServerGroupService
from infracloud.compute.hosts import HostService
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.lifetimes import Lifetimes
from infracloud.compute.quotas import Quotas
from infracloud.compute.servers import ServerService
from infracloud.compute.signals import HostSignals
from infracloud.core.clock import Clock
from infracloud.core.errors import ConfigError
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import ControllerConfig
from infracloud.hardware.conductor import Conductor
from infracloud.hardware.drain import Drainer
from infracloud.hardware.nodes import NodeService
from infracloud.identity.service import IdentityService
from infracloud.images.data import ImageData
from infracloud.images.imports import ImageImports
from infracloud.images.service import ImageService
from infracloud.images.store import FilesystemStore
from infracloud.network.service import NetworkService
from infracloud.ops import context
from infracloud.ops.alerting import AlertRecord, payload
from infracloud.ops.events import EventLog
from infracloud.sim.simulation import Simulation
from infracloud.site.alerts import SiteAlerts, event_recorder
from infracloud.site.backups import Backups
from infracloud.site.duties import Duties, Duty
from infracloud.site.usage import UsageReports
from infracloud.store import Database, wakeups
from infracloud.store.leases import Leases

MAINTENANCE_SECONDS = 60.0


@dataclass
class Services:
    config: ControllerConfig
    db: Database
    identity: IdentityService
    images: ImageService
    image_data: ImageData
    network: NetworkService
    flavors: FlavorService
    keypairs: KeypairService
    quotas: Quotas
    servers: ServerService
    hosts: HostService
    credentials: HostCredentials
    signals: HostSignals
    nodes: NodeService
    conductor: Conductor
    simulation: Simulation
    clock: Clock
    events: EventLog
    usage: UsageReports
    alerts: SiteAlerts
    backups: Backups
    leases: Leases  # owned by this controller process (its owner id is unique to it)
    duties: Duties = field(init=False)
    image_imports: ImageImports = field(init=False)  # the import API (glance-direct)
    # hears of other controllers' changes to hosts (PostgreSQL; store.wakeups)
    wakeups: wakeups.Listener | None = None
    server_groups: ServerGroupService = field(init=False)
    flavor_access: FlavorAccess = field(init=False)
    lifetimes: Lifetimes = field(init=False)

    def __post_init__(self) -> None:
        self.lifetimes = Lifetimes(self.db, self.config.compute.lifetimes, self.clock,
                                   self.servers, self.events.record, self.expiry_webhook)
        self.duties = Duties(self.leases, self.clock, self.config.duties, self.background())
        self.server_groups = ServerGroupService(self.db, self.clock, self.quotas)
        self.flavor_access = FlavorAccess(self.flavors)
        self.image_imports = ImageImports(self.image_data)

    @property
    def owner(self) -> str:
        """This controller process in leases and node reservations: its `controller_id`
        (default host:port) and a suffix new at each start."""
        return self.leases.owner

    def background(self) -> list[Duty]:
        """The background duties: each singleton runs on one controller at a time."""
        c = self.config
        return [Duty("maintenance", MAINTENANCE_SECONDS, self.maintenance),
                Duty("reaper", c.compute.reap_seconds, self.reap),
                Duty("alerts", c.ops.alerts.interval, self.alerts.tick),
                Duty("lifetimes", c.compute.lifetimes.interval, self.expire),
                Duty("conductor", on_gain=self.conductor.wake),  # it asks holds() each tick
                Duty("keys", MAINTENANCE_SECONDS, self.refresh, singleton=False)]

    @property
    def base_url(self) -> str:
        return self.config.base_url()

    def maintenance(self, *, backups: bool = True) -> None:
        """Periodic housekeeping of every service (runs in a worker thread); `backups`:
        the scheduled backup too (not in the round before the controller serves, which a
        backup would hold up)."""
        with context.acting("system:maintenance"):
            self.identity.maintenance()
            self.image_data.maintenance()
            self.events.prune()
            self.usage.prune()
            self.usage.sample_capacity()
            if backups:
                self.backups.maintenance()

    def refresh(self) -> None:
        """On every controller: pick up the token keys another controller made."""
        self.identity.keys.load()

    def reap(self) -> None:
        """Frequent housekeeping: host liveness, server timeouts, and the unknown servers
        whose grace has passed (compute.unknown)."""
        with context.acting("system:reaper"):
            self.hosts.reap()
            self.hosts.unknown.expire()

    def expire(self) -> None:
        """Servers' lifetimes: warnings before, deletion at expiry (compute/lifetimes.py)."""
        with context.acting("system:lifetimes"):
            self.lifetimes.sweep()

    def expiry_webhook(self, a: AlertRecord) -> None:
        """A server's expiry warning to the alert webhook, when the site has one."""
        n = self.alerts.notifier
        if n.webhook is not None:
            n.webhook.send(payload(a, site=n.site, source=n.source, dashboard=n.dashboard))

    def start_background(self) -> None:
        """Work that needs the API up: the conductor (and machines it boots in simulation),
        which picks work while this controller holds the conductor duty."""
        self.simulation.install()
        self.conductor.gate = lambda: self.duties.holds("conductor")
        self.conductor.start()
        if self.wakeups is not None:
            self.wakeups.start()

    def close(self) -> None:
        self.duties.stop()  # the duties' leases go first: a survivor takes them at once
        self.conductor.stop()  # its work in progress frees its nodes
        self.duties.release_heartbeat()
        if self.wakeups is not None:
            self.wakeups.close()
        self.simulation.close()
        self.image_data.close()
        self.alerts.close()
        self.events.close()
        self.db.dispose()


def build_services(config: ControllerConfig, clock: Clock | None = None,
                   migrate: bool = True) -> Services:
    clock = clock or Clock()
    db = Database(config.database.url, pool_size=config.database.pool_size,
                  echo=config.database.echo,
                  cache_check_seconds=config.database.cache_check_seconds)
    if migrate and config.database.auto_upgrade:
        db.migrate()
    elif migrate:  # the operator runs `infracloud db upgrade`; start only on its result
        db.check_schema(upgrade=False)
    events = EventLog(db, config.site, clock, retention_days=config.ops.events_retention_days,
                      queue_size=config.ops.events_queue)
    events.install()
    box = SecretBox(config)
    identity = IdentityService(db, config.identity, clock, box=box)
    holder = config.controller_id or f"{socket.gethostname()}:{config.listen.port}"
    owner = f"{holder}#{secrets.token_hex(3)}"  # this process: leases, node reservations
    images = ImageService(db, config.images, clock)
    image_data = ImageData(db, images, FilesystemStore(config.images.store_path),
                           config.images, clock, holder)
    image_data.recover()
    c = config.compute
    quotas = Quotas(db, c.quota)
    network = NetworkService(db, c.network, clock, quotas.port_limit)
    flavors = FlavorService(db, clock)
    with db.startup_lock():  # controllers starting together on a new database
        identity.start()
        network.ensure()
        flavors.ensure(c.flavors)
    keypairs = KeypairService(db, clock, c.quota.key_pairs)
    signals = HostSignals()
    servers = ServerService(db, c, clock, flavors, keypairs, quotas, network, images.get,
                            signals.notify)
    hosts = HostService(db, c, clock, servers, signals.notify)
    h = config.hardware
    nodes = NodeService(db, h, clock, box)
    conductor = Conductor(db, h, clock, nodes, Drainer(db, clock, hosts, servers),
                          config.base_url(), owner)
    nodes.wake = conductor.wake
    backups = Backups(db, config, clock)
    cacert: str | bool = str(config.tls.ca) if config.tls and config.tls.ca else True
    return Services(config=config, db=db, identity=identity, images=images,
                    image_data=image_data, network=network, flavors=flavors,
                    keypairs=keypairs, quotas=quotas, servers=servers, hosts=hosts,
                    credentials=HostCredentials(db, box, clock, _agent_token(config),
                                                shared=c.agent_token_shared),
                    signals=signals, nodes=nodes, conductor=conductor,
                    simulation=Simulation(h.simulation, cacert,
                                          controller=config.base_url()),
                    clock=clock, events=events,
                    usage=UsageReports(db, clock, config),
                    alerts=SiteAlerts(db, config.site, config.ops.alerts, clock,
                                      base_url=config.base_url(),
                                      record_event=event_recorder(events),
                                      backups=backups),
                    backups=backups, leases=Leases(db, clock, owner),
                    wakeups=wakeups.listener(db, signals.watched, signals.notify_many,
                                             signals.wake_all)
                    if config.database.host_wakeups else None)


def _agent_token(config: ControllerConfig) -> str | None:
    path = config.compute.agent_token_file
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"compute.agent_token_file: cannot read {path}: {exc.strerror}"
                          ) from None
    if len(token) < 16:
        raise ConfigError(f"compute.agent_token_file {path}: the token must have at least 16 "
                          f"characters")
    return token
