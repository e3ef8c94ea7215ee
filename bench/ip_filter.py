"""The server list's `ip` filter: what the worst expressions it accepts cost, against the
expressions it refuses, over the fixed addresses of a page of servers.

    .venv/bin/python bench/ip_filter.py [--servers 1000] [--repeat 5]

Each accepted expression is matched (`re.match`, as the list does) against `--servers`
addresses of a /16 (the demo's network), and the best of `--repeat` runs is printed in
milliseconds per list. The refused ones are listed with the reason `compile_ip` gives and,
for scale, what one of them would cost on a single address if it ran (with a timeout).
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing
import re
import time

from infracloud.compute.server_filters import compile_ip
from infracloud.core.errors import BadRequest

ACCEPTED = [
    r"127\.100\.3\.7$",  # one address
    r"127\.100\.",  # a prefix
    r".*.*.*.*9$",  # the most repetitions allowed, each unbounded
    r"(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)x",  # 5**5 ways, all failing
    r"[0-9.]*[0-9.]*[0-9.]*[0-9.]*z",
]
REFUSED = [r"(\d+)+x", r"(.*)*x", r"(\d|\d|.)*x", r"(\d?\d?)*x", r".*.*.*.*.*x",
           "(.|.|.)" * 9, "(.|.).*.*.*.*x", r"(\d)\1", "x" * 65]


def addresses(n: int) -> list[str]:
    net = ipaddress.ip_network("127.100.0.0/16")
    return [str(net.network_address + 2 + i) for i in range(n)]


def best_ms(pattern: re.Pattern[str], addrs: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        sum(1 for a in addrs if pattern.match(a))
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _run_unbounded(expr: str, address: str) -> None:
    re.compile(expr).match(address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    addrs = addresses(args.servers)
    print(f"accepted expressions, {args.servers} addresses, best of {args.repeat}:")
    for expr in ACCEPTED:
        print(f"  {best_ms(compile_ip(expr), addrs, args.repeat):8.2f} ms  {expr}")
    print("refused expressions (never run by the list):")
    for expr in REFUSED:
        try:
            compile_ip(expr)
            why = "ACCEPTED (unexpected)"
        except BadRequest as exc:
            why = str(exc)
        print(f"  {expr[:24]:24}  {why}")
    # what a refused one costs on one IPv4-sized string when it does run
    proc = multiprocessing.Process(target=_run_unbounded, args=(r"(\d+)+x", "1" * 28))
    start = time.perf_counter()
    proc.start()
    proc.join(10)
    took = time.perf_counter() - start
    if proc.is_alive():
        proc.kill()
        print(r"  (\d+)+x on one 28-digit string: still running after 10 s (killed)")
    else:
        print(rf"  (\d+)+x on one 28-digit string: {took:.1f} s")


if __name__ == "__main__":
    main()
