"""The controller's configuration file: pydantic models and a loader that reports every error
with its path (and line) in the YAML file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from infracloud.core.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)
    tls_terminated_by_proxy: bool = Field(
        False, description="plain HTTP on a non-loopback address is allowed: a proxy in front "
        "terminates TLS (without this and without `tls`, only loopback may be plain HTTP)")
    drain_seconds: float = Field(
        0, ge=0, le=300, description="on SIGTERM/SIGINT, serve on this long while /readyz "
        "answers 404 (stopping) before closing, so a balancer moves new requests elsewhere "
        "first; behind HAProxy at least twice its check interval")

    def is_loopback(self) -> bool:
        import ipaddress

        host = self.host.strip("[]")
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class TLSConfig(_Section):
    cert: Path = Field(description="PEM certificate chain served to clients")
    key: Path = Field(description="PEM private key of that certificate")
    ca: Path | None = Field(None, description="CA certificate written into generated clouds.yaml")


class DatabaseConfig(_Section):
    url: str = Field("sqlite:///infracloud.db", description="SQLAlchemy URL: sqlite or postgresql")
    pool_size: int = Field(10, ge=1, le=200)
    echo: bool = False
    auto_upgrade: bool = Field(
        True, description="apply pending schema migrations at start; false: refuse to start "
        "until `infracloud db upgrade` has run (several controllers on PostgreSQL)")
    cache_check_seconds: float = Field(
        1.0, ge=0, le=60, description="how often a controller asks the database whether "
        "another controller changed what it caches (flavors, tokens' users, projects, roles "
        "and revocations, token keys): the most seconds a change made through one controller "
        "goes unseen by another; 0: ask on every use")
    host_wakeups: bool = Field(
        True, description="PostgreSQL: LISTEN for changes made through other controllers "
        "to the hosts whose agents long-poll this one, so they hear of them at once (false: "
        "within 5 s, as on a connection pooler that cannot LISTEN)")

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:, postgresql: or postgresql+psycopg:")
        return value


class PasswordHashConfig(_Section):
    """argon2id parameters. The default is OWASP's recommendation (19 MiB, 2 passes, 1 lane):
    about 40 ms a hash on one core here, against 190 ms for RFC 9106's low-memory profile
    (64 MiB, 3 passes, 4 lanes), which held password logins to 6/s on a 2-core controller.
    Existing hashes are upgraded at the next login when these settings change."""

    time_cost: int = Field(2, ge=1, le=20)
    memory_cost_kib: int = Field(19456, ge=8, le=4 * 1024 * 1024)
    parallelism: int = Field(1, ge=1, le=64)


class RateConfig(_Section):
    """A token bucket: `burst` at once, then `per_minute` (0: no limit)."""

    per_minute: float = Field(ge=0)
    burst: int = Field(ge=1)


class LoginLimitConfig(_Section):
    """Password and application-credential logins (each costs an argon2 hash), through the
    API and the dashboard's sign-in. Counted by each controller for itself."""

    per_address: RateConfig = Field(
        RateConfig(per_minute=300, burst=60),
        description="login attempts from one client address")
    per_user: RateConfig = Field(
        RateConfig(per_minute=10, burst=10),
        description="failed login attempts for one user name (a success gives its turn back)")


class IdentityConfig(_Section):
    token_expiration: int = Field(3600, ge=1, le=7 * 24 * 3600, description="token life, seconds")
    max_active_keys: int = Field(3, ge=2, le=32, description="Fernet keys kept after rotation")
    key_rotation_hours: float = Field(
        24, ge=0, description="rotate the Fernet keys this often; 0 turns automatic rotation off"
    )
    validation_cache_seconds: float = Field(
        2.0, ge=0, le=60, description="how long a controller reuses a validated token"
    )
    password_hash: PasswordHashConfig = PasswordHashConfig()
    login_limit: LoginLimitConfig = LoginLimitConfig()


GIB = 1024**3


class ImageQuotaConfig(_Section):
    """Per project; -1 means unlimited."""

    images: int = Field(100, ge=-1)
    bytes: int = Field(1024 * GIB, ge=-1)


class ImagesConfig(_Section):
    store_path: Path = Field(Path("images"), description="folder of the filesystem image store")
    max_image_size: int = Field(100 * GIB, ge=1, description="bytes")
    quota: ImageQuotaConfig = ImageQuotaConfig()
    stale_upload_seconds: int = Field(
        300, ge=10, description="an upload with no progress this long is killed")
    gc_grace_seconds: int = Field(
        600, ge=0, description="unreferenced image data is deleted after this long")


class FlavorConfig(_Section):
    name: str = Field(pattern=NAME_PATTERN)
    vcpus: int = Field(ge=1)
    ram_mb: int = Field(ge=64)
    disk_gb: int = Field(ge=0)


DEFAULT_FLAVORS = [
    FlavorConfig(name="ci.8g", vcpus=8, ram_mb=8192, disk_gb=80),
    FlavorConfig(name="ci.8g-30", vcpus=8, ram_mb=8192, disk_gb=30),
    FlavorConfig(name="ci.small", vcpus=1, ram_mb=1024, disk_gb=10),
]


class ComputeQuotaConfig(_Section):
    """Per project unless a project has its own limit; -1 means unlimited."""

    instances: int = Field(100, ge=-1)
    cores: int = Field(800, ge=-1)
    ram_mb: int = Field(800 * 1024, ge=-1)
    key_pairs: int = Field(100, ge=-1)
    ports: int = Field(50, ge=-1, description="network ports, a server's included")
    server_groups: int = Field(10, ge=-1)
    server_group_members: int = Field(10, ge=-1, description="servers per server group")


class NetworkConfig(_Section):
    """The site's one provider network. The demo uses part of 127.0.0.0/8 so that sandbox
    instances are reachable on loopback."""

    name: str = Field("provider", pattern=NAME_PATTERN)
    cidr: str = "10.42.0.0/16"
    gateway: str | None = None
    pool_start: str | None = Field(None, description="default: the second usable address")
    pool_end: str | None = Field(None, description="default: the last usable address")
    dns: list[str] = []
    mtu: int = Field(1500, ge=576, le=9216)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        import ipaddress

        net = ipaddress.ip_network(value, strict=False)
        if net.version != 4 or net.num_addresses < 4:
            raise ValueError("must be an IPv4 network with room for at least 2 servers")
        return str(net)


class UnknownServersConfig(_Section):
    """Servers a host's agent runs that the database does not know: after a restore from a
    backup, those created since it was taken (their hosts kept running them)."""

    action: Literal["reap", "adopt"] = Field(
        "reap", description="reap: their agents destroy them (Nova's "
        "running_deleted_instance_action = reap); adopt: each becomes a server of the database "
        "again when its project, flavor, address and room on its host are consistent with the "
        "database, else it is reaped")
    grace: float = Field(
        900, ge=0, description="seconds from an agent's first report of such a server until "
        "it is reaped or adopted; nothing is destroyed before (one the database knows was "
        "deleted is destroyed at once)")


class ComputeConfig(_Section):
    flavors: list[FlavorConfig] = list(DEFAULT_FLAVORS)
    quota: ComputeQuotaConfig = ComputeQuotaConfig()
    network: NetworkConfig = NetworkConfig()
    scheduler: Literal["spread", "pack"] = "spread"
    cpu_allocation_ratio: float = Field(1.0, gt=0, description="1.0: no overcommit")
    ram_allocation_ratio: float = Field(1.0, gt=0)
    disk_allocation_ratio: float = Field(1.0, gt=0)
    agent_token_file: Path | None = Field(
        None, description="file holding a secret for agents started by hand (X-Agent-Token); "
        "it binds to the first host that registers with it (deployed machines get their own "
        "credential at join)")
    agent_token_shared: bool = Field(
        False, description="the agent_token_file token opens every host (one secret for the "
        "whole site: any holder can read every host's servers and report for them)")
    heartbeat_seconds: float = Field(5, gt=0, description="how often agents check in")
    host_down_after: float = Field(30, gt=0, description="seconds without a heartbeat")
    instance_error_after: float = Field(
        60, ge=0, description="seconds a host may stay down before its servers go to ERROR")
    spawn_timeout: float = Field(900, gt=0)
    reap_seconds: float = Field(2, gt=0, description="how often timeouts are checked")
    availability_zones: list[str] = ["nova"]
    unknown_servers: UnknownServersConfig = UnknownServersConfig()


class SimulationConfig(_Section):
    """Simulated machines (fake BMCs) boot as in-process agents with this hypervisor driver."""

    agent_driver: Literal["fake", "sandbox", "libvirt"] = "fake"
    libvirt_uri: str = Field("qemu:///system", description="libvirt's URI, for agent_driver "
                             "libvirt (the hosts then register this machine's capacity)")
    root: Path | None = Field(None, description="folder for the simulated hosts' files")
    ssh_port: int = Field(22, ge=1, le=65535, description="sandbox servers' SSH port")
    poll_wait: float = Field(10, gt=0, le=60)


class HardwareConfig(_Section):
    """The conductor: how it talks to BMCs and how long each provisioning step may take."""

    secret_key_file: Path | None = Field(
        None, description="the site's secret key (Fernet): encrypts BMC passwords, token signing "
        "keys and pending host credentials; default: beside the SQLite database (required "
        "with PostgreSQL: the same file on every controller)")
    bmc_timeout: float = Field(10, gt=0, le=120, description="seconds for one BMC call")
    retries: int = Field(5, ge=1, le=20, description="attempts of a BMC call on transient errors")
    backoff: float = Field(0.5, ge=0, le=60, description="first retry delay; doubles, capped")
    backoff_max: float = Field(8, ge=0, le=300)
    fence_after: int = Field(
        8, ge=1, le=1000, description="consecutive failed BMC calls that fence a machine "
        "(maintenance with fault 'power failure')")
    workers: dict[str, int] = Field(
        default_factory=lambda: {"redfish": 8, "ipmi": 4, "fake": 32},
        description="concurrent BMC operations per protocol")
    power_sync_interval: float = Field(
        60, ge=1, description="check every machine's power this often, spread evenly")
    fault_recovery_interval: float = Field(
        300, ge=1, description="probe fenced machines' BMCs this often; clear the fault if "
        "they answer")
    power_wait: float = Field(60, gt=0, description="seconds for a power change to show")
    lease: float = Field(
        10, gt=0, le=600, description="seconds a conductor's reservation of a node it works on "
        "lasts unless renewed; renewed every third of it while the work runs; another "
        "controller takes the node over only once it ran out and the holder's controller "
        "stopped heartbeating")
    timeouts: dict[str, float] = Field(
        default_factory=dict, description="seconds per in-progress provision state, overriding "
        "the defaults of `infracloud states node`")
    deploy_agent_driver: str | None = Field(
        None, description="the hypervisor driver the agents of deployed compute machines run "
        "(their join config names it); never sandbox, which isolates nothing")
    simulation: SimulationConfig = SimulationConfig()

    @field_validator("deploy_agent_driver")
    @classmethod
    def _not_sandbox(cls, value: str | None) -> str | None:
        if value == "sandbox":
            raise ValueError("deployed machines never run the sandbox driver (it runs servers' "
                             "commands on the host itself)")
        if value not in (None, "libvirt", "fake"):
            raise ValueError(f"must be libvirt or fake, not {value!r}")
        return value

    @field_validator("workers")
    @classmethod
    def _known_protocols(cls, value: dict[str, int]) -> dict[str, int]:
        for key, n in value.items():
            if key not in ("redfish", "ipmi", "fake"):
                raise ValueError(f"unknown BMC protocol {key!r}")
            if not 1 <= n <= 256:
                raise ValueError(f"{key}: workers must be between 1 and 256")
        return {"redfish": 8, "ipmi": 4, "fake": 32, **value}


class BootstrapConfig(_Section):
    admin_user: str = Field("admin", pattern=NAME_PATTERN)
    admin_project: str = Field("admin", pattern=NAME_PATTERN)
    admin_password_file: Path | None = Field(
        None, description="file holding the admin password; bootstrap runs when it is set"
    )


class LoggingConfig(_Section):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


class AlertsConfig(_Section):
    """Health rules, checked every `interval` seconds. Firing and resolved alerts go to the
    log, the events, the dashboard and (when set) a webhook that gets a JSON POST."""

    interval: float = Field(10, gt=0, le=3600, description="seconds between rule checks")
    webhook_url: str | None = Field(None, description="JSON POST of every firing and resolved")
    webhook_timeout: float = Field(5, gt=0, le=60)
    capacity_flavor: str | None = Field(
        None, description="flavor whose free slots the capacity rule counts; default: the "
                          "flavor with the most vCPUs")
    capacity_min_free: int = Field(
        1, ge=0, description="capacity alert when fewer slots of that flavor are free")
    launch_failure_rate: float = Field(
        0.2, ge=0, le=1, description="alert when more of the window's launches failed")
    launch_window_minutes: float = Field(15, gt=0, le=24 * 60)
    launch_min_count: int = Field(
        5, ge=1, description="launches needed in the window before the rate is judged")
    pool_wait_minutes: float = Field(
        10, gt=0, description="pool: alert on requests waiting longer than this")


class OpsConfig(_Section):
    """Operations: events, metrics, the dashboard and alerts."""

    public_read: bool = Field(
        True, description="the dashboard, /metrics and the read-only ops API (status, events, "
                          "alerts, usage) need no login; false asks for an admin or reader token")
    events_retention_days: float = Field(90, gt=0, description="events older than this go")
    events_queue: int = Field(
        10000, ge=1, description="API events waiting to be written; beyond, they are dropped "
        "and counted (infracloud_api_events_dropped_total)")
    usage_retention_days: float = Field(
        400, gt=0, description="usage records of servers gone longer than this go")
    alerts: AlertsConfig = AlertsConfig()


class DutiesConfig(_Section):
    """The background duties (maintenance, reaper, alerts, the hardware conductor): each runs
    on one controller at a time, the holder of its lease; a survivor takes over a dead
    holder's duties within `lease_ttl` + `renew_every` seconds."""

    lease_ttl: float = Field(
        10, gt=0, le=300, description="seconds a duty's lease, and a controller's heartbeat, "
        "last unless renewed")
    renew_every: float = Field(
        3, gt=0, description="seconds between renewals; under half of lease_ttl (a holder "
        "stops starting rounds of a duty once a renewal is overdue)")

    @model_validator(mode="after")
    def _renew_in_time(self) -> DutiesConfig:
        if self.renew_every * 2 >= self.lease_ttl:
            raise ValueError(f"renew_every ({self.renew_every:g}) must be under half of "
                             f"lease_ttl ({self.lease_ttl:g})")
        return self


class LimitsConfig(_Section):
    """What one caller may hold of a controller (each controller counts its own)."""

    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body (JSON, forms); image data is "
        "streamed and limited by images.max_image_size and the image quota")
    long_polls_per_client: int = Field(
        8, ge=1, description="concurrent long-polls (`wait=`) from one client address")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _seconds(value: Any) -> Any:
    """Seconds as a number, or a duration: 90s, 15m, 1h, 2d, 1w."""
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m is None:
            raise ValueError(f"{value!r} is neither seconds nor a duration (90s, 15m, 1h, 2d, "
                             f"1w)")
        return float(m[1]) * _UNITS[m[2]]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]


class BackupConfig(_Section):
    """Backups the controller takes by itself (`infracloud backup`'s archive), into `dir`.
    Off unless `every` is set."""

    every: Seconds | None = Field(
        None, gt=0, description="take a backup when the newest good one in `dir` is older "
        "than this (seconds, or 90s, 15m, 1h, 2d, 1w); unset: no scheduled backups")
    keep: int = Field(48, ge=1, description="backups kept in `dir`; the oldest beyond go")
    dir: Path = Field(Path("backups"), description="folder of the scheduled backups")
    passphrase_file: Path | None = Field(
        None, description="file whose first line is the passphrase that encrypts the key "
        "files in the backups (required with `every`)")
    stale_after: Seconds | None = Field(
        None, gt=0, description="the backup_stale alert when the newest good backup is older "
        "than this; default: 2 x every")

    @model_validator(mode="after")
    def _passphrase_needed(self) -> BackupConfig:
        if self.every is not None and self.passphrase_file is None:
            raise ValueError("passphrase_file is required when every is set")
        return self

    @property
    def enabled(self) -> bool:
        return self.every is not None

    def stale_seconds(self) -> float | None:
        if self.every is None:
            return None
        return self.stale_after if self.stale_after is not None else 2 * self.every


class ControllerConfig(_Section):
    site: str = Field("default", pattern=NAME_PATTERN)
    controller_id: str | None = Field(
        None, description="stable name of this controller; default: hostname:port")
    region: str = Field("RegionOne", pattern=NAME_PATTERN)
    public_url: str | None = Field(
        None, description="base URL clients reach the controller on; default from listen and tls"
    )
    listen: ListenConfig = ListenConfig()
    tls: TLSConfig | None = None
    database: DatabaseConfig = DatabaseConfig()
    identity: IdentityConfig = IdentityConfig()
    images: ImagesConfig = ImagesConfig()
    compute: ComputeConfig = ComputeConfig()
    hardware: HardwareConfig = HardwareConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    logging: LoggingConfig = LoggingConfig()
    ops: OpsConfig = OpsConfig()
    limits: LimitsConfig = LimitsConfig()
    backup: BackupConfig = BackupConfig()
    duties: DutiesConfig = DutiesConfig()
    _source: Path | None = PrivateAttr(None)  # the file it was read from (config_errors)

    @property
    def source(self) -> Path | None:
        return self._source

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def plain_http_refusal(self) -> str | None:
        """Why a real controller must not start as configured: plain HTTP carries passwords
        and tokens in clear, so only on loopback unless a TLS proxy is said to be in front."""
        if self.tls is not None or self.listen.is_loopback() or \
                self.listen.tls_terminated_by_proxy:
            return None
        return (f"listen.host {self.listen.host} is not a loopback address and there is no tls "
                f"section: plain HTTP would carry passwords and tokens in clear; configure tls, "
                f"or set listen.tls_terminated_by_proxy: true when a TLS-terminating proxy is "
                f"in front")

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        scheme = "https" if self.tls else "http"
        host = self.listen.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.listen.port}"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk a composed YAML node tree along a pydantic error location; return a 1-based line."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == part:
                    best = key.start_mark.line + 1
                    nxt = value
                    break
            if nxt is None:
                return best
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return best
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            return best
    return best


def config_errors(path: Path) -> tuple[ControllerConfig | None, list[str]]:
    """Validate a controller config file. Returns the config (None on error) and every error,
    one per line, each as `FILE:LINE: dotted.path: message`."""
    data, errors = validate_file(path, ControllerConfig)
    if data is None:
        return None, errors
    assert isinstance(data, ControllerConfig)
    data._source = path.resolve()
    return _resolve_paths(data, path.parent), []


def read_text(path: Path) -> str:
    """A config or inventory file's text, or a ValueError `FILE: cannot read: why` (missing,
    unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: cannot read: not UTF-8 text (byte "
                         f"0x{exc.object[exc.start]:02x} at offset {exc.start})") from None


def yaml_error(source: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: `FILE:LINE: invalid YAML: problem`."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: invalid YAML: {problem}"


def validate_file(path: Path, model: type[BaseModel]) -> tuple[BaseModel | None, list[str]]:
    """Any YAML config file against its pydantic model, errors with their lines. An empty file
    is an error (a file that says nothing is more likely a mistake than a wish for defaults)."""
    try:
        text = read_text(path)
    except ValueError as exc:
        return None, [str(exc)]
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, [yaml_error(str(path), exc)]
    if data is None:
        return None, [f"{path}: the file is empty: it must hold a mapping of settings"]
    if not isinstance(data, dict):
        return None, [f"{path}:1: the file must hold a mapping of settings"]
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc) or "(top)"
            line = _line_of(root, loc)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            errors.append(f"{path}:{line}: {dotted}: {msg}")
        return None, errors
    return config, []


def _resolve_paths(config: ControllerConfig, base: Path) -> ControllerConfig:
    """Relative paths in a config file are relative to the file's folder."""

    def fix(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    if config.tls:
        config.tls.cert = fix(config.tls.cert)  # type: ignore[assignment]
        config.tls.key = fix(config.tls.key)  # type: ignore[assignment]
        config.tls.ca = fix(config.tls.ca)
    config.bootstrap.admin_password_file = fix(config.bootstrap.admin_password_file)
    config.images.store_path = fix(config.images.store_path)  # type: ignore[assignment]
    config.compute.agent_token_file = fix(config.compute.agent_token_file)
    config.hardware.secret_key_file = fix(config.hardware.secret_key_file)
    config.hardware.simulation.root = fix(config.hardware.simulation.root)
    config.backup.dir = fix(config.backup.dir)  # type: ignore[assignment]
    config.backup.passphrase_file = fix(config.backup.passphrase_file)
    url = config.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        config.database.url = prefix + str((base / url[len(prefix) :]).resolve())
    return config


def load_config(path: Path) -> ControllerConfig:
    config, errors = config_errors(path)
    if config is None:
        raise ConfigError("; ".join(errors))
    return config
