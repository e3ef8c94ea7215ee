"""deploy/haproxy-pool.cfg is a configuration Debian's HAProxy accepts (`haproxy -c`), with the
pool's certificate files in a folder of the test's, and says what the README promises of it
(tests/ha/test_pool_standby.py runs it in front of two pool processes)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infracloud.api.tls import ensure_certificates

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy-pool.cfg"


def test_haproxy_accepts_the_shipped_pool_config(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():  # .ci/run installs it
        pytest.fail("haproxy is not installed: apt-get install haproxy")
    ca, cert, key = ensure_certificates(tmp_path / "tls", ["pool.example.org"])
    (tmp_path / "pool.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    shutil.copy(ca, tmp_path / "pool-ca.pem")
    local, count = re.subn(r"(?m)^(\s*(?:crt|ca)-base) /etc/haproxy$", rf"\1 {tmp_path}",
                           CONFIG.read_text())
    assert count == 2, "the config finds its files through crt-base and ca-base"
    (tmp_path / "haproxy.cfg").write_text(local)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_pool_config_checks_readiness_and_never_sends_a_write_twice() -> None:
    lines = {" ".join(line.split()) for line in CONFIG.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")}
    for wanted in ("option httpchk GET /readyz HTTP/1.1", "http-check expect status 200",
                   "retries 3", "option redispatch 1",
                   "http-request disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS"):
        assert wanted in lines, wanted
    assert len([line for line in lines if line.startswith("server ")]) == 2
