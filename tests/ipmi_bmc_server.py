"""A process serving N simulated IPMI BMCs on UDP ports of 127.0.0.1 (pyghmi's BMC server).

    python tests/ipmi_bmc_server.py --ports 6230,6231 [--user admin] [--password password]

Prints `ready <ports>` once every port is bound, then serves until SIGTERM/SIGINT.
Each BMC keeps a power state ('off' at start) and a boot device ('default' at start).

pyghmi's own client cannot talk to pyghmi's server unpatched: the client proposes SHA-256,
the server always answers cipher suite 3 (SHA-1) and the client trusts that answer (struct
error). Answering "no matching authentication payload" (0x11) to anything but SHA-1 makes the
client fall back to SHA-1 (shared/specs/test-peers.md, section 2)."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import Any

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession

_original_open_response = serversession.ServerSession.create_open_session_response


def _open_session_response(self: Any, request: bytearray) -> bytearray:
    if request[12] != 1:  # authentication algorithm other than RAKP-HMAC-SHA1
        return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
    return _original_open_response(self, request)


serversession.ServerSession.create_open_session_response = _open_session_response


class SimBmc(bmc.Bmc):
    def __init__(self, auth: dict[str, str], port: int) -> None:
        super().__init__(auth, port=port, address="127.0.0.1")
        self.powerstate = "off"
        self.bootdevice: str | int = "default"

    def get_power_state(self) -> str:
        return self.powerstate

    def power_on(self) -> None:
        self.powerstate = "on"

    def power_off(self) -> None:
        self.powerstate = "off"

    def power_shutdown(self) -> None:
        self.powerstate = "off"

    def power_cycle(self) -> None:
        self.powerstate = "on"

    def power_reset(self) -> None:
        # a hard reset of a running machine leaves it running; of a stopped one, stopped
        pass

    def get_boot_device(self) -> str | int:
        return self.bootdevice

    def set_boot_device(self, bootdevice: str | int) -> None:
        self.bootdevice = bootdevice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", required=True, help="comma-separated UDP ports")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="password")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p]
    bmcs = [SimBmc({args.user: args.password}, port) for port in ports]

    def stop(signum: int, frame: Any) -> None:
        sys.stdout.flush()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready " + ",".join(str(b.port) for b in bmcs), flush=True)
    while True:  # until the signal handler raises SystemExit
        try:
            bmc.Bmc.listen(timeout=1)
        except Exception:  # one bad packet must not take every simulated BMC down with it
            traceback.print_exc()
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
