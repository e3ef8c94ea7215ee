"""What a pytest run did, read from its JUnit XML (family xunit1, which names each test's file):
one outcome per test id (pytest's node id relative to the suites' root)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class Result:
    outcome: str
    message: str = ""  # a failure's or a skip's one line


def node_id(file: str, classname: str, name: str) -> str:
    """pytest's node id from a <testcase>'s file, classname and name."""
    if not file and not classname:  # a collection error: name is the module, dotted
        return name.replace(".", "/") + ".py"
    if not file:  # xunit2 names no file: take the last capitalised parts as classes
        parts = classname.split(".")
        split = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
        file, classes = "/".join(parts[:split]) + ".py", parts[split:]
    else:
        module = file.removesuffix(".py").replace("/", ".")
        rest = classname[len(module):].lstrip(".") if classname.startswith(module) else ""
        classes = rest.split(".") if rest else []
    return "::".join([file, *classes, name])


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _exception_lines(text: str) -> list[str]:
    """The lines of the exception a report ends with: after the last stdlib traceback
    (testtools' reports), else pytest's 'E   ' lines."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]
    if starts:
        tail = lines[starts[-1] + 1:]
        first = next((i for i, line in enumerate(tail) if line and not line[0].isspace()), None)
        return [] if first is None else [line.strip() for line in tail[first:]]
    return [line[1:].strip() for line in lines if line.startswith("E ")]


def _command(text: str) -> str:
    """`openstack server create` from a CommandFailed's command line (no options, no names)."""
    m = re.search(r"Command '(openstack[^']*)'", text)
    if m is None:
        return ""
    words: list[str] = []
    skip_value = False
    for word in m.group(1).split()[1:]:
        if skip_value:
            skip_value = False
        elif word.startswith("--os-"):
            skip_value = "=" not in word
        elif word.startswith("-") or len(words) >= 3:
            break
        else:
            words.append(word)
    return "openstack " + " ".join(words)


def failure_line(message: str | None, text: str | None) -> str:
    """A failure's one line: the exception the report ends with (testtools' reports put a
    note of their own in the message); for a failed `openstack` command, the command and
    what it printed on stderr."""
    lines = [line for line in _exception_lines(text or "") if line]
    if not lines:
        return _first_line(message) or _first_line(text)
    found = lines[0]
    if "CommandFailed" in found:
        after = lines[lines.index("stderr:") + 1:] if "stderr:" in lines else []
        said = after[0] if after else ""
        said = said[2:-1] if said.startswith(("b'", 'b"')) else said
        said = said.replace("\\n", " ").strip()
        return f"CommandFailed: {_command(found)}: {said or found}"
    if found.endswith(":") and len(lines) > 1:
        found += " " + lines[1]
    return found


def parse(xml_text: str) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        test_id = node_id(case.get("file", ""), case.get("classname", ""), case.get("name", ""))
        result = Result(PASSED)
        for child in case:
            if child.tag in ("failure", "error"):
                result = Result(FAILED, failure_line(child.get("message"), child.text))
                break
            if child.tag == "skipped":
                result = Result(SKIPPED, _first_line(child.get("message")))
        earlier = results.get(test_id)
        # a test whose call passed and whose teardown failed is written twice: failed wins
        if earlier is None or result.outcome == FAILED:
            results[test_id] = result
    return results


def load(path: Path) -> dict[str, Result]:
    return parse(path.read_text())
