"""python -m tools.conformance [--update-skips] [--tests ID ...] [--workers N]

Starts a demo of its own, runs the OpenStack clients' functional suites against it with
pytest, stops the demo, prints the summary and exits 1 when the verdict fails (2 on bad
arguments or a skip list that does not parse)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openstack
from tools.conformance import results, site, skiplist, verdict
from tools.conformance.plugin import RUN_SKIPPED_ENV, SKIPS_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SKIPS = HERE / "skips.txt"
# the suites ship inside the packages: node ids are relative to their site-packages
SUITES_ROOT = Path(openstack.__file__).resolve().parents[1]
SUITES = [f"{package}/tests/functional/{area}" for package in ("openstackclient", "openstack")
          for area in ("compute", "image", "identity")]
# the suites' extra imports (tempest.lib, testtools, fixtures, oslotest), installed by
# `make conformance` from tools/conformance/requirements.lock
OVERLAY = ROOT / ".venv-conformance"
RUN_TIMEOUT = 3600


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.conformance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update-skips", action="store_true",
                   help="rewrite the list's 'fails:' lines from this run (new failures get "
                   "'fails: UNEXPLAINED', which a run refuses until a human writes the reason)")
    p.add_argument("--tests", nargs="+", metavar="ID", help="run only these test ids or "
                   "paths (relative to site-packages, as in the skip list)")
    p.add_argument("-k", dest="keyword", help="pytest's -k expression")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: none)")
    p.add_argument("--skips", type=Path, default=SKIPS, help="the skip list")
    p.add_argument("--run-skipped", action="store_true", help="run the list's 'skip:' "
                   "tests too and fail if one passes (is the list still true?)")
    p.add_argument("--hold", action="store_true", help="with --keep: start and seed the "
                   "demo, write DIR/suites.env, say how to run a test by hand and wait for "
                   "Ctrl-C (no run)")
    p.add_argument("--junit", type=Path, metavar="XML", help="no run: judge (and with "
                   "--update-skips, rewrite the list from) the JUnit XML of an earlier run")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the demo's folder, the "
                   "clouds.yaml and the JUnit XML in DIR (else a temporary folder)")
    args = p.parse_args(argv)
    if args.workers < 0:
        p.error("--workers must be 0 or more")
    if args.run_skipped and args.update_skips:
        p.error("--update-skips rewrites 'fails:' lines from a normal run, not --run-skipped")
    if args.hold and not args.keep:
        p.error("--hold needs --keep DIR (where the clouds.yaml and suites.env go)")
    return args


def pytest_command(args: argparse.Namespace, work: Path, junit: Path) -> list[str]:
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n")  # not the project's settings (its testpaths, its addopts)
    cmd = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(SUITES_ROOT),
           "-p", "no:cacheprovider", "-p", "tools.conformance.plugin", "-q", "-rN",
           "-o", "junit_family=xunit1", f"--junitxml={junit}"]
    if args.workers:
        cmd += ["-n", str(args.workers), "--dist", "loadfile"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    return cmd + [str(SUITES_ROOT / t) for t in (args.tests or SUITES)]


def run(args: argparse.Namespace, work: Path, skips: skiplist.SkipList) -> int:
    started = time.monotonic()
    demo = site.start(work / "demo")
    print(f"conformance: demo ready at {demo.base_url} ({time.monotonic() - started:.0f} s)",
          flush=True)
    junit = work / "junit.xml"
    try:
        clouds = site.write_clouds(demo, work)
        site.seed(clouds)
        env = {**os.environ, **site.suite_env(clouds), SKIPS_ENV: str(args.skips.resolve()),
               RUN_SKIPPED_ENV: "1" if args.run_skipped else "0"}
        # the suites' `openstack` is this virtualenv's; the plugin and the overlay importable
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(OVERLAY), env.get("PYTHONPATH", "")) if p)
        cmd = pytest_command(args, work, junit)
        if args.hold:
            return hold(demo, work, env, cmd)
        print(f"conformance: pytest on {' '.join(args.tests or SUITES)} (in {SUITES_ROOT})",
              flush=True)
        try:
            subprocess.run(cmd, cwd=work, env=env, timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            print(f"conformance: the suites did not finish within {RUN_TIMEOUT} s",
                  file=sys.stderr)
            return 1
    finally:
        demo.stop()
    if not junit.exists():
        print("conformance: pytest wrote no results (see its output above)", file=sys.stderr)
        return 1
    return conclude(args, skips, junit, started)


def hold(demo: site.Demo, work: Path, env: dict[str, str], cmd: list[str]) -> int:
    """Leave the seeded demo up for tests run by hand: write `work`/suites.env (the suites'
    variables, for `source`) and say how to run one; stop on Ctrl-C."""
    env = {**env, "SUITES": str(SUITES_ROOT)}
    keys = [*site.suite_env(work / "clouds.yaml"), SKIPS_ENV, "PATH", "PYTHONPATH", "SUITES"]
    lines = [f"{key}={shlex.quote(env[key])}" for key in keys]
    (work / "suites.env").write_text("\n".join([*lines, "export " + " ".join(keys)]) + "\n")
    base = [shlex.quote(c) for c in cmd[:cmd.index("-q")]]
    print(f"conformance: the demo stays up at {demo.base_url} until Ctrl-C; from another "
          f"shell:\n  cd {work} && source suites.env && {' '.join(base)} -q \"$SUITES/<test id>\"",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the demo too
        demo.proc.wait()
    return 0


def conclude(args: argparse.Namespace, skips: skiplist.SkipList, junit: Path,
             started: float) -> int:
    outcomes = results.load(junit)
    full = not (args.tests or args.keyword)
    if args.update_skips:
        failed = [(t, r.message) for t, r in outcomes.items() if r.outcome == results.FAILED]
        not_failing = [t for t, r in outcomes.items() if r.outcome != results.FAILED]
        skips = skiplist.updated(skips, failed, not_failing)
        args.skips.write_text(skips.render())
        print(f"conformance: rewrote {args.skips}")
    judged = verdict.judge(skips, outcomes, full_run=full, run_skipped=args.run_skipped)
    print(f"\nconformance summary ({time.strftime('%Y-%m-%d')}, "
          f"{time.monotonic() - started:.0f} s):")
    print(verdict.summary(judged))
    for problem in judged.problems:
        print(f"  FAIL {problem}")
    print("conformance: " + ("ok" if judged.ok else f"{len(judged.problems)} problems"))
    return 0 if judged.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        skips = skiplist.load(args.skips)
    except (OSError, skiplist.SkipListError) as exc:
        print(f"conformance: {args.skips}: {exc}", file=sys.stderr)
        return 2
    if args.junit:
        return conclude(args, skips, args.junit, time.monotonic())
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            return run(args, args.keep.resolve(), skips)
        with tempfile.TemporaryDirectory(prefix="infracloud-conformance-") as work:
            return run(args, Path(work), skips)
    except site.DemoError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
