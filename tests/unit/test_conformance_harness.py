"""`make conformance`'s harness (tools/conformance) without a demo: the skip list's format,
the verdict on synthetic JUnit XML, and the plugin and the JUnit reading on a real pytest run
of a small synthetic suite. The OpenStack suites' real run is `make conformance`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tools.conformance import results, skiplist, verdict
from tools.conformance.plugin import SKIPS_ENV

ROOT = Path(__file__).resolve().parents[2]
SDK = "openstack/tests/functional/compute/v2/test_server.py::TestServer"
OSC = "openstackclient/tests/functional/image/v2/test_image.py::ImageTests"

LIST = f"""\
# header comment, kept by a rewrite
#   second line

openstack/tests/functional/compute/v2/test_volume_attachment.py  skip: volumes: no block storage
{SDK}::test_lock  fails: server actions: lock/unlock
{OSC}::test_image_import  fails: image import: glance-direct
"""


def junit(*cases: str) -> str:
    return "<testsuites><testsuite>" + "".join(cases) + "</testsuite></testsuites>"


def case(test_id: str, child: str = "") -> str:
    file, *classes, name = test_id.split("::")
    classname = ".".join([file.removesuffix(".py").replace("/", "."), *classes])
    return f'<testcase file="{file}" classname="{classname}" name="{name}">{child}</testcase>'


FAIL = ('<failure message="boom">Traceback (most recent call last):\n  File "x"\n'
        "KeyError: 'a'</failure>")
SKIP = '<skipped message="{}" />'


def test_the_list_parses_into_entries_with_kinds_groups_and_matching() -> None:
    skips = skiplist.parse(LIST)
    assert [e.kind for e in skips.entries] == ["skip", "fails", "fails"]
    volumes = skips.entries[0]
    assert volumes.group == "volumes" and volumes.reason == "volumes: no block storage"
    # a skip entry may name a file (or class): every test under it matches
    name = "openstack/tests/functional/compute/v2/test_volume_attachment.py::T::test_x"
    assert skips.find(name) is volumes
    assert skips.find(f"{SDK}::test_lock").group == "server actions"
    # a fails entry is one test: its prefix matches nothing else
    assert skips.find(f"{SDK}::test_lock_more") is None
    assert skips.find(f"{SDK}::test_unlisted") is None


@pytest.mark.parametrize(("text", "error"), [
    ("a::b  maybe: why", "neither 'skip' nor 'fails'"),
    ("a::b  fails:", "has no reason"),
    ("a::b", "want '<test id>  skip|fails: <reason>'"),
    ("a::b  skip: x\na::b  fails: y", "listed twice"),
])
def test_a_bad_line_is_refused_with_its_number(text: str, error: str) -> None:
    with pytest.raises(skiplist.SkipListError, match=error):
        skiplist.parse(text)


def test_the_verdict_fails_on_an_unlisted_failure_and_a_listed_pass_only() -> None:
    skips = skiplist.parse(LIST)
    xml = junit(case(f"{SDK}::test_lock", FAIL),
                case(f"{OSC}::test_image_import", FAIL),
                case(f"{SDK}::test_create"),
                case("openstack/tests/functional/compute/v2/test_volume_attachment.py::"
                     "TestVolumeAttachment::test_attach", SKIP.format("skip list: volumes")),
                case(f"{SDK}::test_console", SKIP.format("Service volume not found")))
    judged = verdict.judge(skips, results.parse(xml))
    assert judged.ok, judged.problems  # listed failures fail: fine
    total = judged.total()
    assert (total.ran, total.passed) == (3, 1)
    assert total.expected_failures == {"server actions": 1, "image import": 1}
    assert total.skipped_by_list == {"volumes": 1}
    assert total.skipped_by_suite == {"Service volume not found": 1}
    assert set(judged.tallies) == {("openstacksdk", "compute"),
                                   ("python-openstackclient", "image")}

    unlisted = results.parse(junit(case(f"{SDK}::test_lock", FAIL),
                                   case(f"{OSC}::test_image_import", FAIL),
                                   case(f"{SDK}::test_rebuild", FAIL)))
    judged = verdict.judge(skips, unlisted)
    assert not judged.ok
    assert judged.problems == [f"{SDK}::test_rebuild: fails and is not on the list: "
                               "KeyError: 'a'"]

    now_passes = results.parse(junit(case(f"{SDK}::test_lock"),
                                     case(f"{OSC}::test_image_import", FAIL)))
    judged = verdict.judge(skips, now_passes)
    assert judged.problems == [f"{SDK}::test_lock: passes now: remove it from the list"]


def test_listed_failures_that_did_not_run_fail_a_full_run_only() -> None:
    skips = skiplist.parse(LIST)
    only_one = results.parse(junit(case(f"{SDK}::test_lock", FAIL)))
    assert verdict.judge(skips, only_one, full_run=False).ok
    judged = verdict.judge(skips, only_one, full_run=True)
    assert judged.problems == [f"{OSC}::test_image_import: on the list but did not run "
                               "(renamed or gone?): remove it from the list"]


def test_update_keeps_reasons_drops_passes_and_marks_new_failures_unexplained() -> None:
    skips = skiplist.parse(LIST)
    new = skiplist.updated(skips, failed=[(f"{OSC}::test_image_import", "x"),
                                          (f"{SDK}::test_rebuild", "KeyError:  'a'\n more")],
                           not_failing=[f"{SDK}::test_lock"])
    text = new.render()
    assert text.startswith("# header comment, kept by a rewrite\n#   second line\n")
    assert f"{SDK}::test_lock " not in text
    assert f"{OSC}::test_image_import  fails: image import: glance-direct" in text
    assert f"{SDK}::test_rebuild  fails: UNEXPLAINED KeyError: 'a' more" in text
    assert "test_volume_attachment.py  skip: volumes: no block storage" in text
    reparsed = skiplist.parse(text)
    assert set(reparsed.entries) == set(new.entries) and reparsed.render() == text
    # an UNEXPLAINED reason fails the run until a human writes one
    judged = verdict.judge(reparsed, results.parse(junit(
        case(f"{SDK}::test_rebuild", FAIL), case(f"{OSC}::test_image_import", FAIL))))
    assert len(judged.problems) == 1
    assert judged.problems[0].startswith(f"{SDK}::test_rebuild: write the reason")


SUITE = '''\
import unittest


def test_passes():
    pass


def test_fails():
    assert 1 == 2


def test_listed_fails():
    raise KeyError("a")


def test_listed_passes():
    pass


class TestCase(unittest.TestCase):
    def test_listed_skip(self):
        raise AssertionError("must not run")

    def test_own_skip(self):
        self.skipTest("no such service")
'''


def test_a_real_pytest_run_through_the_plugin_and_the_junit_reader(tmp_path: Path) -> None:
    pkg = tmp_path / "suite"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "test_synthetic.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    mod = "suite/test_synthetic.py"
    (tmp_path / "skips.txt").write_text(textwrap.dedent(f"""\
        {mod}::TestCase::test_listed_skip  skip: volumes: no block storage
        {mod}::test_listed_fails  fails: server actions: rebuild
        {mod}::test_listed_passes  fails: server actions: lock
    """))
    xml = tmp_path / "junit.xml"
    env = {**os.environ, SKIPS_ENV: str(tmp_path / "skips.txt"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
                    "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-p",
                    "tools.conformance.plugin", "-o", "junit_family=xunit1",
                    f"--junitxml={xml}", "-q", "-n", "0", mod],
                   cwd=tmp_path, env=env, capture_output=True, check=False, timeout=120)
    outcomes = results.load(xml)
    assert {t: r.outcome for t, r in outcomes.items()} == {
        f"{mod}::test_passes": "passed", f"{mod}::test_fails": "failed",
        f"{mod}::test_listed_fails": "failed", f"{mod}::test_listed_passes": "passed",
        f"{mod}::TestCase::test_listed_skip": "skipped",
        f"{mod}::TestCase::test_own_skip": "skipped"}
    assert outcomes[f"{mod}::TestCase::test_listed_skip"].message == (
        "skip list: volumes: no block storage")
    assert outcomes[f"{mod}::test_listed_fails"].message == "KeyError: 'a'"
    judged = verdict.judge(skiplist.load(tmp_path / "skips.txt"), outcomes)
    assert judged.problems == [
        f"{mod}::test_fails: fails and is not on the list: assert 1 == 2",
        f"{mod}::test_listed_passes: passes now: remove it from the list"]
    total = judged.total()
    assert total.skipped_by_list == {"volumes": 1}
    assert total.skipped_by_suite == {"no such service": 1}
    assert total.expected_failures == {"server actions": 1}


def test_a_failed_openstack_command_is_told_by_its_command_and_its_stderr() -> None:
    """pytest's report of OSC's CommandFailed: the line names the command (no names, no
    options) and what the `openstack` run printed."""
    text = textwrap.dedent("""\
        cmd = 'openstack --os-cloud infracloud-admin server create --flavor x --wait s1'
        E   tempest.lib.exceptions.CommandFailed: Command 'openstack --os-cloud \
infracloud-admin server create --flavor x --wait s1' returned non-zero exit status 1.
        E   stdout:
        E
        E   stderr:
        E   b'BadRequestException: 400: Booting from a volume is not supported.\\n'
        """)
    assert results.failure_line('failed on setup with "tempest"', text) == (
        "CommandFailed: openstack server create: BadRequestException: 400: Booting from a "
        "volume is not supported.")
    testtools = ("testtools.testresult.real._StringException: Traceback (most recent call "
                 "last):\n  File \"t.py\", line 3, in test\n    x()\nAssertionError: "
                 "{'a': 'b'} != {}\n- {'a': 'b'}\n")
    assert results.failure_line("Failed: NOTE: Incompatible", testtools) == (
        "AssertionError: {'a': 'b'} != {}")


def test_with_the_skipped_tests_run_a_skip_line_that_passes_fails_the_run() -> None:
    """--run-skipped: the list's `skip:` tests run too; a failing one is as expected, a
    passing one means its line is no longer true."""
    skips = skiplist.parse(LIST)
    attach = ("openstack/tests/functional/compute/v2/test_volume_attachment.py::"
              "TestVolumeAttachment::test_attach")
    ran = results.parse(junit(case(attach, FAIL), case(f"{SDK}::test_lock", FAIL),
                              case(f"{OSC}::test_image_import", FAIL)))
    judged = verdict.judge(skips, ran, run_skipped=True)
    assert judged.ok and judged.total().expected_failures["volumes"] == 1
    passing = results.parse(junit(case(attach), case(f"{SDK}::test_lock", FAIL),
                                  case(f"{OSC}::test_image_import", FAIL)))
    assert verdict.judge(skips, passing, run_skipped=True).problems == [
        f"{attach}: passes now: remove it from the list"]


def test_the_overlay_lock_pins_with_hashes_only_what_the_project_lock_lacks() -> None:
    """tools/conformance/requirements.lock: exact versions with hashes (pip --require-hashes
    refuses anything else), and nothing .venv has already, which the overlay would shadow."""
    text = (ROOT / "tools" / "conformance" / "requirements.lock").read_text()
    pins = dict(line.split(" ", 1)[0].split("==") for line in text.splitlines()
                if line and not line.startswith(("#", " ")))
    assert set(pins) == {"fixtures", "oslotest", "tempest", "testtools"}
    assert text.count("--hash=sha256:") == len(pins)
    project = (ROOT / "requirements.lock").read_text().lower()
    assert [name for name in pins if f"\n{name}==" in project] == []
