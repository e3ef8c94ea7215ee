"""deploy/haproxy.cfg (controllers) and deploy/haproxy-pool.cfg (two pool processes) are
configurations Debian's HAProxy accepts (`haproxy -c`), with their certificate files in a folder
of the test's, and say what the README promises of them (tests/ha/ runs them in front of
controllers and pool processes)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infracloud.api.tls import ensure_certificates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG = DEPLOY / "haproxy.cfg"
POOL_CONFIG = DEPLOY / "haproxy-pool.cfg"


@pytest.mark.parametrize(("config", "name"), [(CONFIG, "infracloud"), (POOL_CONFIG, "pool")])
def test_haproxy_accepts_the_shipped_config(tmp_path: Path, config: Path, name: str) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():  # .ci/run installs it
        pytest.fail("haproxy is not installed: apt-get install haproxy")
    ca, cert, key = ensure_certificates(tmp_path / "tls", [f"{name}.example.org"])
    (tmp_path / f"{name}.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    shutil.copy(ca, tmp_path / f"{name}-ca.pem")
    text = config.read_text()
    local, count = re.subn(r"(?m)^(\s*(?:crt|ca)-base) /etc/haproxy$", rf"\1 {tmp_path}", text)
    assert count == 2, "the config finds its files through crt-base and ca-base"
    (tmp_path / "haproxy.cfg").write_text(local)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout + checked.stderr
    # an unchanged copy without the files is refused: the check reads what it is given
    broken = local.replace(f"crt-base {tmp_path}", f"crt-base {tmp_path / 'missing'}")
    (tmp_path / "broken.cfg").write_text(broken)
    assert subprocess.run([haproxy, "-c", "-f", str(tmp_path / "broken.cfg")],
                          capture_output=True, timeout=60).returncode != 0


def test_the_config_checks_readiness_and_retries_elsewhere() -> None:
    lines = {" ".join(line.split()) for line in CONFIG.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")}
    for wanted in ("option httpchk GET /readyz HTTP/1.1", "http-check expect status 200",
                   "retries 3",
                   "option redispatch 1", "timeout server 10m", "timeout client 10m",
                   "http-check disable-on-404"):
        assert wanted in lines, wanted
    servers = [line for line in lines if line.startswith("server ")]
    assert len(servers) == 3
    # HAProxy's own 503 (no controller ready) in OpenStack's shape, with Retry-After
    (error,) = [line for line in lines if line.startswith("http-error status 503 ")]
    assert "content-type application/json" in error and error.endswith("hdr Retry-After 5")


def test_the_pool_config_checks_readiness_and_never_sends_a_write_twice() -> None:
    lines = {" ".join(line.split()) for line in POOL_CONFIG.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")}
    for wanted in ("option httpchk GET /readyz HTTP/1.1", "http-check expect status 200",
                   "retries 3", "option redispatch 1",
                   "http-request disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS"):
        assert wanted in lines, wanted
    assert len([line for line in lines if line.startswith("server ")]) == 2
