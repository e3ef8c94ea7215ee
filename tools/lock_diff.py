"""Print how the newest allowed releases (a `pip freeze`) differ from requirements.lock, for
this Python and platform (the lock's environment markers evaluated here)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.markers import Marker

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in Path(path).read_text().splitlines():
        if (m := PIN.match(line)) and (not m.group(3) or Marker(m.group(3)).evaluate()):
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


def main() -> None:
    locked, latest = pins(sys.argv[1]), pins(sys.argv[2])
    changed = [(n, locked[n], latest[n]) for n in sorted(locked.keys() & latest.keys())
               if locked[n] != latest[n]]
    for name, old, new in changed:
        print(f"  {name}: {old} -> {new}")
    for name in sorted(latest.keys() - locked.keys()):
        print(f"  {name}: new, {latest[name]}")
    if not changed and not latest.keys() - locked.keys():
        print("  none")


if __name__ == "__main__":
    main()
