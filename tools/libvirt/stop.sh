#!/bin/bash
# Stop what tools/libvirt/start.sh STATE_DIR started (by its pid files; nothing else).
# Destroy your domains first: QEMU processes outlive libvirtd.
D=${1:?usage: stop.sh STATE_DIR}
for p in libvirtd virtlogd; do
  [ -f "$D/$p.pid" ] || continue
  pid=$(cat "$D/$p.pid")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$D/$p.pid"
done
