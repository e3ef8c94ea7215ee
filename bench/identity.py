"""Identity benchmark: tokens issued and validated per second, each as a ratio to an empty
endpoint (GET /healthz) of the same controller measured in the same run.

    .venv/bin/python bench/identity.py [--seconds 5] [--clients 8]

Starts two real controllers on 127.0.0.1 (plain HTTP, SQLite, default argon2 settings): one
with the default validation cache, one with it off, so both the warm and the cold validation
path are measured. The client shares the machine's cores with the server, as a CI launcher on
the same host would; only the ratios are meant to be compared between runs.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from common import admin_token, auth_body, measure, start_controller


def run(seconds: float, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        warm_dir, cold_dir = Path(tmp, "warm"), Path(tmp, "cold")
        warm_dir.mkdir()
        cold_dir.mkdir()
        # logins as fast as one client can: no login rate limit (a security setting, measured
        # here for the cost of the login itself)
        unlimited = {"per_address": {"per_minute": 0, "burst": 1},
                     "per_user": {"per_minute": 0, "burst": 1}}
        procs = [start_controller(warm_dir, 18901, identity={"validation_cache_seconds": 2.0,
                                                             "login_limit": unlimited}),
                 start_controller(cold_dir, 18902, identity={"validation_cache_seconds": 0.0,
                                                             "login_limit": unlimited})]
        try:
            warm, cold = "http://127.0.0.1:18901", "http://127.0.0.1:18902"
            tokens = {}
            for base in (warm, cold):
                tokens[base] = admin_token(base)
            subjects = [httpx.post(warm + "/identity/v3/auth/tokens",
                                   json=auth_body("token", tokens[warm]))
                        .headers["X-Subject-Token"] for _ in range(200)]

            def validate(base: str) -> Callable[[httpx.Client, int], httpx.Response]:
                return lambda c, i: c.get("/identity/v3/auth/tokens?nocatalog", headers={
                    "X-Auth-Token": tokens[base], "X-Subject-Token": subjects[i % 200]})

            rows = [
                ("empty endpoint (baseline)", measure(
                    warm, seconds, clients, lambda c, i: c.get("/healthz"), 200)),
                ("issue: password (argon2id)", measure(
                    warm, seconds, clients, lambda c, i: c.post(
                        "/identity/v3/auth/tokens", json=auth_body("password")), 201)),
                ("issue: token (rescope)", measure(
                    warm, seconds, clients, lambda c, i: c.post(
                        "/identity/v3/auth/tokens",
                        json=auth_body("token", tokens[warm])), 201)),
                ("validate (cache on)", measure(warm, seconds, clients, validate(warm), 200)),
                ("authenticated GET /v3/projects", measure(
                    warm, seconds, clients, lambda c, i: c.get(
                        "/identity/v3/projects", headers={"X-Auth-Token": tokens[warm]}), 200)),
            ]
            # the cold controller needs subject tokens of its own
            subjects[:] = [httpx.post(cold + "/identity/v3/auth/tokens",
                                      json=auth_body("token", tokens[cold]))
                           .headers["X-Subject-Token"] for _ in range(200)]
            rows.append(("validate (cache off)",
                         measure(cold, seconds, clients, validate(cold), 200)))
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    baseline = rows[0][1]
    print(f"identity benchmark: {clients} client threads, {seconds:g} s per row, "
          f"ratios against the empty endpoint of the same controller")
    print(f"{'scenario':34} {'req/s':>10} {'ratio':>8}")
    for name, rate in rows:
        print(f"{name:34} {rate:10.1f} {rate / baseline:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    run(args.seconds, args.clients)
