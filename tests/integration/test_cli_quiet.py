"""No library noise on a user's terminal: every command's --help writes nothing to stderr, and
each command's error path writes exactly its one line, with Python's warnings all turned on
(PYTHONWARNINGS=default shows deprecations that are silent by default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer

from infracloud.cli import app
from tests.servers import free_port

INFRACLOUD = str(Path(sys.executable).parent / "infracloud")
NOWHERE = "/nonexistent/infracloud-test.yaml"
NO_POOL = "infracloud: error: which pool? pass --url or set INFRACLOUD_POOL_URL"
NO_CLOUDS = (f"infracloud: error: which cloud? no clouds.yaml at {NOWHERE} and no "
             f"OS_AUTH_URL (the demo writes one: `source var/demo/infracloud.env`)")


def command_paths() -> list[tuple[str, ...]]:
    """Every command of the `infracloud` tree, groups included."""
    def walk(cmd: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [path]
        return [path] + [p for name, sub in subs.items() for p in walk(sub, (*path, name))]
    return walk(typer.main.get_command(app), ())


# each command's error path, and the one line it must write to stderr
ERRORS: dict[tuple[str, ...], tuple[list[str], str]] = {
    ("demo",): (["--driver", "nope"],
                "infracloud: error: --driver must be auto, libvirt, sandbox or fake, not 'nope'"),
    ("controller",): (["--config", NOWHERE], f"{NOWHERE}: cannot read: No such file or directory"),
    ("agent",): (["--controller", "https://127.0.0.1:1"],
                 "infracloud: error: an agent token is needed: --token, "
                 "INFRACLOUD_AGENT_TOKEN or --join"),
    ("states",): (["nokind"], "infracloud: error: unknown kind 'nokind'; kinds: image, "
                              "instance, host, node, pool-node, pool-request, "
                              "unknown-server"),
    ("capacity",): ([], NO_CLOUDS),
    ("events",): (["--since", "yesterday"],
                  "infracloud: error: --since: 'yesterday' is neither a duration "
                  "(90s, 15m, 1h, 2d, 1w) nor an ISO 8601 date or time"),
    ("status",): ([], NO_CLOUDS),
    ("backup",): (["--config", NOWHERE, "--output", "/nonexistent/site.tar"],
                  "infracloud: error: a passphrase is needed: --passphrase-file or "
                  "INFRACLOUD_BACKUP_PASSPHRASE"),
    ("restore",): (["/nonexistent/site.tar", "--config", NOWHERE, "--passphrase-file", NOWHERE],
                   f"infracloud: error: --passphrase-file {NOWHERE}: cannot read: "
                   "No such file or directory"),
    ("config", "validate"): ([NOWHERE], f"{NOWHERE}: cannot read: No such file or directory"),
    ("keys", "rotate"): (["--config", NOWHERE],
                         f"{NOWHERE}: cannot read: No such file or directory"),
    ("db", "upgrade"): (["--config", NOWHERE],
                        f"{NOWHERE}: cannot read: No such file or directory"),
    ("db", "status"): (["--config", NOWHERE],
                       f"{NOWHERE}: cannot read: No such file or directory"),
    ("hardware", "enroll"): ([NOWHERE], f"infracloud: error: {NOWHERE}: cannot read: "
                                        "No such file or directory"),
    ("hardware", "deploy"): (["--all"], NO_CLOUDS),
    ("hardware", "undeploy"): (["--all"], NO_CLOUDS),
    ("hardware", "list"): ([], NO_CLOUDS),
    ("hardware", "inventory"): ([NOWHERE], f"infracloud: error: {NOWHERE}: cannot read: "
                                           "No such file or directory"),
    ("pool", "request"): (["small"], NO_POOL),
    ("pool", "list"): ([], NO_POOL),
    ("pool", "requests"): ([], NO_POOL),
    ("pool", "labels"): ([], NO_POOL),
    ("pool", "providers"): ([], NO_POOL),
    ("pool", "release"): (["n1"], NO_POOL),
    ("pool", "hold"): (["n1", "--reason", "debugging"], NO_POOL),
    ("pool", "drain"): (["p1"], NO_POOL),
    ("pool", "undrain"): (["p1"], NO_POOL),
    ("pool", "cancel"): (["r1"], NO_POOL),
    ("pool", "status"): ([], NO_POOL),
    ("report", "usage"): (["--by", "nothing"],
                          "infracloud: error: --by must be one of project, flavor, host, "
                          "user, not 'nothing'"),
}
NO_ERROR_PATH = {(), ("version",), ("config",), ("keys",), ("db",), ("hardware",), ("pool",),
                 ("report",)}


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OS_", "INFRACLOUD_")) and k != "PYTHONWARNINGS"}
    env.update(PYTHONWARNINGS="default", OS_CLIENT_CONFIG_FILE=NOWHERE)
    return subprocess.run([INFRACLOUD, *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_every_command_has_an_error_path_here() -> None:
    # a new command gets its row: the test cannot silently miss one
    assert set(command_paths()) == set(ERRORS) | NO_ERROR_PATH


def test_help_writes_nothing_to_stderr() -> None:
    paths = command_paths()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: run([*p, "--help"]), paths))
    for path, r in zip(paths, results, strict=True):
        assert r.returncode == 0, (path, r.stderr)
        assert r.stderr == "", (path, r.stderr)
        assert "Usage" in r.stdout


def test_each_error_is_exactly_its_line() -> None:
    cases = list(ERRORS.items())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run([*c[0], *c[1][0]]), cases))
    for (path, (_, line)), r in zip(cases, results, strict=True):
        assert (r.returncode, r.stderr) == (2, line + "\n"), (path, r.stderr)


def test_bad_files_and_usage_errors_are_one_line(tmp_path: Path) -> None:
    """Files that are not UTF-8, empty, not YAML, a state folder under a regular file, and
    click's own usage errors (a bad option value, a missing argument): one line, exit 2."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"site: caf\xe9\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    broken = tmp_path / "broken.yaml"
    broken.write_text("machines:\n  - name: a\n    bmc: [unclosed\n")
    regular = tmp_path / "regular"
    regular.write_text("a file, not a folder\n")
    not_utf8 = f"{latin}: cannot read: not UTF-8 text (byte 0xe9 at offset 9)"
    no_yaml = f"{broken}:4: invalid YAML: expected ',' or ']', but got '<stream end>'"
    cases = [
        (["config", "validate", str(latin)], not_utf8),
        (["hardware", "enroll", str(latin)], f"infracloud: error: {not_utf8}"),
        (["config", "validate", str(empty)],
         f"{empty}: the file is empty: it must hold a mapping of settings"),
        (["hardware", "enroll", str(broken)], f"infracloud: error: {no_yaml}"),
        (["hardware", "inventory", str(broken)], f"infracloud: error: {no_yaml}"),
        (["demo", "--port", str(free_port()), "--state-dir", str(regular / "demo")],
         f"infracloud: error: --state-dir {regular / 'demo'}: cannot use {regular / 'demo'}: "
         f"Not a directory"),
        (["demo", "--port", "0"], "infracloud: error: Invalid value for '--port': Input "
                                  "should be greater than or equal to 1"),
        (["demo", "--network-name", " "],
         "infracloud: error: --network-name must be 1 to 255 characters"),
        (["config", "validate"], "infracloud: error: Missing argument 'config_file'."),
        (["nosuch"], "infracloud: error: No such command 'nosuch'."),
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run(c[0]), cases))
    wrong = [(args[:2], r.returncode, r.stderr[-300:]) for (args, line), r in
             zip(cases, results, strict=True) if (r.returncode, r.stderr) != (2, line + "\n")]
    assert wrong == []
    assert not (regular / "demo").exists() and regular.read_text() == "a file, not a folder\n"


def test_a_library_warning_reaches_a_json_log_once(tmp_path: Path) -> None:
    """A process that logs JSON tells a warning raised while it imports as one JSON line,
    however often the library raises it; a one-shot command tells it nowhere."""
    script = tmp_path / "noisy.py"
    script.write_text(
        "import warnings\n"
        "from infracloud.cli import main\n"  # captures warnings first, as the console script
        "from infracloud.ops import logging as logs\n"
        "for _ in range(3):\n"
        "    warnings.warn('the old way is deprecated', DeprecationWarning, stacklevel=1)\n"
        "warnings.warn('the old way is deprecated', DeprecationWarning, stacklevel=1)\n"
        "import sys\n"
        "if sys.argv[1] == 'log':\n"
        "    logs.configure('json', 'info')\n"
        "    warnings.warn('the old way is deprecated', DeprecationWarning, stacklevel=1)\n"
        "    warnings.warn('another one', UserWarning, stacklevel=1)\n"
        "print('done')\n")
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    quiet = subprocess.run([sys.executable, str(script), "quiet"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert (quiet.stdout, quiet.stderr) == ("done\n", "")
    logged = subprocess.run([sys.executable, str(script), "log"], capture_output=True,
                            text=True, env=env, timeout=60)
    lines = [json.loads(line) for line in logged.stderr.splitlines()]
    assert [(rec["logger"], rec["level"]) for rec in lines] == [("py.warnings", "warning")] * 2
    assert "DeprecationWarning: the old way is deprecated" in lines[0]["msg"]
    assert "UserWarning: another one" in lines[1]["msg"]

