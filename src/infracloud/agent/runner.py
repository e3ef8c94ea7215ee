"""The compute-host agent: registers its host, long-polls the controller for the servers the
host should run, makes the host match through its driver, and reports back. It reconciles
from scratch on every answer, so a restart of the agent, of the controller, or a network
outage needs nothing special: what the controller says to remove is destroyed, what should
run and is being spawned is spawned, and what runs is reported. The agent destroys nothing
on its own account: a server it runs that the controller did not list is reported as unknown
(with what the agent knows of it, kept in `servers/` when it was spawned) and left running
until the controller says (compute.unknown: after a restore from a backup, the servers
created since it was taken); a server the controller counts as running that the host does
not have is reported absent (it vanished), never re-created behind its owner's back."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from infracloud.agent import actions, configdrive
from infracloud.agent.drivers.base import Driver, DriverError, InstanceSpec, NetworkInfo
from infracloud.agent.image_fetch import Downloads, ImageFetchError
from infracloud.clients import http
from infracloud.ops.alerting import controller_watch

log = logging.getLogger(__name__)
CONSOLE_LINES = 400
HANDOVER_HEADER = "X-Agent-Credential"  # a rotated credential: use it from now on


@dataclass(frozen=True)
class HostInfo:
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str = "nova"
    reserved_vcpus: int = 0
    reserved_ram_mb: int = 0
    reserved_disk_gb: int = 0


class Agent:
    def __init__(self, controller: str | Sequence[str], token: str, driver: Driver, host: HostInfo,
                 workdir: Path, *, cacert: str | bool | ssl.SSLContext = True,
                 poll_wait: float = 20,
                 workers: int = 4, join_token: str | None = None,
                 credential_file: Path | None = None,
                 alert_after: float | None = None, alert_webhook: str | None = None,
                 transport: httpx.BaseTransport | None = None,
                 images: Callable[[str], Path] | None = None) -> None:
        """`controller`: the controller's base URL, or several (`URL,URL` or a list): the agent
        fails over to the next when one refuses or answers 502/503/504, and stays with the one that
        answers (`http.Failover`). `token`: the host's credential (or the site's agent token); or,
        for a machine the conductor deployed, `join_token`: the one-time token from its deploy
        media, traded for the host's credential when the agent joins (and the host name is the
        machine's). The credential is kept in `credential_file` (mode 0600), so a restarted agent
        goes on with it, and so is every rotated credential the controller hands over. The
        controller unreachable for `alert_after` seconds (default: 3 long-polls) fires an alert: a
        log line, and a POST to `alert_webhook` when given. `images` gives a local, verified copy of
        an image by id, for a driver that `needs_image` (libvirt); by default the agent fetches it
        from the controller with the host's credential (only images of servers the controller wants
        on this host) and verifies its sha512, into workdir/downloads."""
        self.controllers = http.split_urls(controller)
        self.controller = self.controllers[0]
        self.driver = driver
        self.workdir = workdir
        self.poll_wait = poll_wait
        self.credential_file = credential_file
        self._credential_lock = threading.Lock()
        kept = self._kept_credential()
        # the credential before the last rotation: a controller restored from a backup taken
        # before that rotation knows only this one
        self._previous: str | None = None
        if kept is not None:
            token, host = kept["credential"], replace(host, name=kept["name"])
            self._previous = kept.get("previous") or None
        self.host = host
        self.joined = kept is not None
        self.downloads = Downloads(workdir / "downloads")
        self.images = images or self._download
        self.http = http.client("agent", base_url=self.controller + "/agent/v1",
                                also=[url + "/agent/v1" for url in self.controllers[1:]],
                                verify=cacert,
                                timeout=httpx.Timeout(10, read=poll_wait + 30),
                                headers={"X-Agent-Token": token}, transport=transport,
                                event_hooks={"response": [self._handover]})
        self.join_token = join_token
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-work")
        self.host_id: str | None = None
        self.generation = -1
        self._busy: set[str] = set()
        # instances this agent process spawned (or re-spawned after finding them on disk)
        self._started: set[str] = set()
        self._lock = threading.Lock()
        self._consoles: dict[str, str] = {}
        self._done: dict[str, str] = {}  # instance id -> the last server action carried out
        self._unknown_sent = False  # the last report told the controller of unknown servers
        self.records = workdir / "servers"  # what each server was spawned with (no secrets)
        self.stop_event = threading.Event()
        self.controller_up = False  # the last call reached the controller (metrics)
        self.on_poll: Callable[[float], None] | None = None  # told each long-poll's seconds
        self.outage = controller_watch(self.controller, host.name, alert_after or 3 * poll_wait,
                                       alert_webhook, transport=transport)
        (workdir / "configdrives").mkdir(parents=True, exist_ok=True)

    # ---- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Until `stop()`: keeps going through controller outages, with backoff."""
        self.driver.validate()
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                if self.host_id is None:
                    self.register()
                self.step(self.poll_wait)
                backoff = 1.0
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    self.host_id = None  # the controller forgot us: register again
                elif exc.response.status_code == 401:
                    self._refused()
                else:
                    log.warning("controller answered %s", exc.response.status_code)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10)
            except httpx.HTTPError as exc:
                self.controller_up = False
                self.outage.failed(str(exc) or type(exc).__name__)
                log.warning("controller unreachable: %s", exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10)

    def instance_counts(self) -> dict[str, int]:
        """Instances this agent runs, and those it is spawning or destroying now."""
        with self._lock:
            return {"running": len(self._started), "busy": len(self._busy)}

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()
        self.outage.close()

    def register(self) -> None:
        h = self.host
        info = {"name": h.name, "driver": self.driver.name, "vcpus": h.vcpus,
                "ram_mb": h.ram_mb, "disk_gb": h.disk_gb,
                "availability_zone": h.availability_zone, "reserved_vcpus": h.reserved_vcpus,
                "reserved_ram_mb": h.reserved_ram_mb, "reserved_disk_gb": h.reserved_disk_gb}
        if self.join_token and not self.joined:
            r = self.http.post("/join", json={"join_token": self.join_token, "host": info})
            r.raise_for_status()
            body = r.json()
            self.host = replace(h, name=body["host"]["name"])
            self._use_credential(body["agent_token"])
            self.joined = True
        else:
            r = self.http.post("/hosts", json=info)
            if r.status_code == 401 and self.join_token and self.credential_file and \
                    not self._previous:
                # the kept credential was revoked (the machine was undeployed, then deployed
                # again): join with the new deploy media's token next time
                self.credential_file.unlink(missing_ok=True)
                self.joined = False
            r.raise_for_status()
            body = r.json()
        self.host_id = body["host"]["id"]
        self.poll_wait = min(self.poll_wait, float(body.get("poll_seconds", self.poll_wait)))
        self.generation = -1
        self._unknown_sent = False
        log.info("registered", extra={"host": h.name, "host_id": self.host_id})

    # ---- the host's credential ---------------------------------------------------------------

    def _kept_credential(self) -> dict[str, str] | None:
        if self.credential_file is None:
            return None
        try:
            kept = json.loads(self.credential_file.read_text())
            return {"name": str(kept["name"]), "credential": str(kept["credential"]),
                    "previous": str(kept.get("previous") or "")}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the kept credential %s: %s", self.credential_file, exc)
            return None

    def _use_credential(self, credential: str, previous: str | None = None) -> None:
        with self._credential_lock:
            self.http.headers["X-Agent-Token"] = credential
            self._previous = previous
            if self.credential_file is None:
                return
            path = self.credential_file
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"name": self.host.name, "credential": credential,
                           **({"previous": previous} if previous else {})}, f)
            os.replace(tmp, path)

    def _handover(self, response: httpx.Response) -> None:
        successor = response.headers.get(HANDOVER_HEADER)
        current = self.http.headers.get("X-Agent-Token")
        if successor and successor != current:
            self._use_credential(successor, previous=current)
            log.info("host credential rotated", extra={"host": self.host.name})

    def _refused(self) -> None:
        """The controller refused the host's credential (401). After a restore from a backup
        taken before the last rotation it knows the credential of before: try that once.
        Otherwise say what the operator can do, and keep trying (the controller may come to
        know the host again)."""
        current = self.http.headers.get("X-Agent-Token")
        previous = self._previous
        self.host_id = None
        if previous and previous != current:
            log.warning("the controller refused this host's credential: trying the one of "
                        "before its last rotation (the controller was restored from a backup "
                        "older than the rotation?); run `infracloud keys rotate` again",
                        extra={"host": self.host.name})
            self._use_credential(previous)
            return
        log.error("the controller refuses this host's credential (401): it does not know it, "
                  "as when it was restored from a backup older than this host's join; deploy "
                  "the machine again (`infracloud hardware deploy NAME`), or start this agent "
                  "with the site's agent token", extra={"host": self.host.name})

    def step(self, wait: float) -> None:
        """One long-poll and one reconciliation."""
        started = time.monotonic()
        r = self.http.get(f"/hosts/{self.host_id}/desired",
                          params={"generation": self.generation, "wait": wait})
        self.controller_up = True
        self.outage.reached()
        if self.on_poll is not None:
            self.on_poll(time.monotonic() - started)
        r.raise_for_status()
        body = r.json()
        self.generation = body["generation"]
        self.reconcile(body["instances"], body.get("remove", []))

    def reconcile(self, wanted: list[dict[str, Any]], remove: list[str]) -> None:
        present = set(self.driver.list())
        want = {w["id"]: w for w in wanted}
        if self.driver.needs_image:  # the bases are the driver's: keep only what may spawn
            self.downloads.retain({w["image_id"] for w in wanted if w.get("image_id")})
        with self._lock:
            busy = set(self._busy)
        removing = set(remove) - set(want)
        reports: list[dict[str, Any]] = []
        for inst_id in sorted(removing):
            self._start(inst_id, self._destroy, inst_id)
        for inst_id, w in want.items():
            if actions.pending(self, w, present):  # a server action, or stopped
                continue
            if inst_id in present and inst_id in self._started:
                if w["state"] == "spawning":
                    reports.append({"id": inst_id, "state": "running",
                                    "console": self._console(inst_id, force=True)})
                else:
                    console = self._console(inst_id)
                    if console is not None:
                        reports.append({"id": inst_id, "state": "running", "console": console})
            elif inst_id in present or w["state"] == "spawning":
                # to boot, or left by an earlier run of the agent: spawning restarts it
                self._start(inst_id, self._spawn, w)
            elif inst_id not in busy:  # counted as running, and not here: it vanished
                log.warning("server vanished", extra={"instance_id": inst_id})
                reports.append({"id": inst_id, "state": "absent"})
        unknown = sorted(i for i in present - set(want) - removing - busy if len(i) <= 36)
        tell = bool(unknown) or self._unknown_sent
        if reports or tell:
            self._report(reports, [self._known_of(i) for i in unknown] if tell else None)
            self._unknown_sent = bool(unknown)

    # ---- work on worker threads --------------------------------------------------------------

    def _start(self, inst_id: str, fn: Callable[[Any], None], arg: Any) -> None:
        with self._lock:
            if inst_id in self._busy:
                return
            self._busy.add(inst_id)

        def run() -> None:
            try:
                fn(arg)
            except Exception:
                log.exception("agent work on %s failed", inst_id)
            finally:
                with self._lock:
                    self._busy.discard(inst_id)

        self.pool.submit(run)

    def _spawn(self, w: dict[str, Any]) -> None:
        inst_id = w["id"]
        try:
            self._remember(w)
            spec = self._spec(w)
            self.driver.spawn(spec)
        except (DriverError, ImageFetchError, OSError, ValueError, KeyError) as exc:
            log.warning("spawn failed", extra={"instance_id": inst_id, "fault": str(exc)})
            self._report([{"id": inst_id, "state": "failed", "fault": str(exc)[:1000],
                           "console": self._console(inst_id, force=True)}])
            return
        self._started.add(inst_id)
        self._report([{"id": inst_id, "state": "running",
                       "console": self._console(inst_id, force=True)}])

    def _destroy(self, inst_id: str) -> None:
        try:
            self.driver.destroy(inst_id)
        except DriverError as exc:
            log.warning("destroy failed", extra={"instance_id": inst_id, "fault": str(exc)})
            return
        (self.workdir / "configdrives" / f"{inst_id}.iso").unlink(missing_ok=True)
        (self.records / f"{inst_id}.json").unlink(missing_ok=True)
        self._consoles.pop(inst_id, None)
        self._done.pop(inst_id, None)
        self._started.discard(inst_id)
        self._report([{"id": inst_id, "state": "absent"}])

    def _remember(self, w: dict[str, Any], again: bool = False) -> None:
        """Keep what the server is (no user_data), so that a controller that does not know it
        (restored from an older backup) can be told: once, when it is first spawned here
        (`again`: rebuilt, from another image)."""
        path = self.records / f"{w['id']}.json"
        if path.exists() and not again:
            return
        n, c = w["network"], w["config"]
        keys = c.get("public_keys") or {}
        key_name = next(iter(keys), None)
        record = {"name": w["name"], "project_id": c.get("project_id"),
                  "user_id": w.get("user_id"), "flavor_id": w.get("flavor_id"),
                  "image_id": w.get("image_id"), "ip": n.get("ip"), "mac": n.get("mac"),
                  "vcpus": w.get("vcpus"), "ram_mb": w.get("ram_mb"),
                  "disk_gb": w.get("disk_gb"), "key_name": key_name,
                  "key_data": keys.get(key_name) if key_name else None,
                  "availability_zone": c.get("availability_zone"),
                  "meta": dict(c.get("meta") or {}),
                  "launched_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.records.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def _known_of(self, inst_id: str) -> dict[str, Any]:
        """What the agent knows of a server it runs (just its id for one spawned before the
        agent kept records)."""
        try:
            record = json.loads((self.records / f"{inst_id}.json").read_text())
        except (OSError, ValueError):
            return {"id": inst_id}
        return {**(record if isinstance(record, dict) else {}), "id": inst_id}

    def _spec(self, w: dict[str, Any]) -> InstanceSpec:
        n, c = w["network"], w["config"]
        iso = self.workdir / "configdrives" / f"{w['id']}.iso"
        user_data = base64.b64decode(c["user_data"]) if c.get("user_data") else None
        configdrive.build(
            iso,
            meta_data=configdrive.meta_data(
                uuid=w["id"], name=w["name"], project_id=c["project_id"],
                hostname=c.get("hostname"), availability_zone=c.get("availability_zone") or
                "nova", meta=c.get("meta") or {}, public_keys=c.get("public_keys") or {}),
            network_data=configdrive.network_data(
                n["ip"], int(n["prefix"]), n.get("gateway"), n["mac"], n.get("dns") or [],
                network_id=n.get("network_id") or ""),
            user_data=user_data)
        return InstanceSpec(id=w["id"], name=w["name"], vcpus=int(w["vcpus"]),
                            ram_mb=int(w["ram_mb"]), disk_gb=int(w["disk_gb"]),
                            network=NetworkInfo(ip=n["ip"], prefix=int(n["prefix"]),
                                                gateway=n.get("gateway"), mac=n["mac"],
                                                dns=tuple(n.get("dns") or ())),
                            config_drive=iso, image=self._image(w),
                            metadata=dict(c.get("meta") or {}))

    def _image(self, w: dict[str, Any]) -> Path | None:
        if not self.driver.needs_image:
            return None
        if not w.get("image_id"):
            raise ValueError(f"server {w['name']} has no image")
        return self.images(w["image_id"])

    def _download(self, image_id: str) -> Path:
        return self.downloads.get(self.http, f"/hosts/{self.host_id}/images/{image_id}",
                                  image_id)

    def _console(self, inst_id: str, force: bool = False) -> str | None:
        """The console tail, or None when it has not changed since it was last sent."""
        try:
            text = self.driver.console(inst_id, CONSOLE_LINES)
        except DriverError:
            return None
        digest = hashlib.sha1(text.encode()).hexdigest()
        if not force and self._consoles.get(inst_id) == digest:
            return None
        self._consoles[inst_id] = digest
        return text

    def _report(self, items: list[dict[str, Any]],
                unknown: list[dict[str, Any]] | None = None) -> None:
        """`unknown`: every server this host runs that the controller did not list."""
        if self.host_id is None:
            return
        body: dict[str, Any] = {"instances": items}
        if unknown is not None:
            body["unknown"] = unknown
        for attempt in range(5):
            try:
                r = self.http.post(f"/hosts/{self.host_id}/report", json=body)
                r.raise_for_status()
                return
            except httpx.HTTPError as exc:
                if self.stop_event.is_set():
                    return
                log.warning("report failed (%s), retrying", exc)
                time.sleep(min(2 ** attempt, 10))
