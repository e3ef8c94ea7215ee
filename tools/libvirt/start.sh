#!/bin/bash
# Start virtlogd and libvirtd by hand, on a machine without systemd (CI, containers).
# Usage: tools/libvirt/start.sh STATE_DIR     (stop them with tools/libvirt/stop.sh STATE_DIR)
#   Writes STATE_DIR/{virtlogd,libvirtd}.pid. Does nothing if a libvirtd already answers on
#   qemu:///system. NETNS=name runs libvirtd (and so every QEMU, tap and bridge it makes)
#   inside that network namespace.
set -euo pipefail
D=$(realpath -m "${1:?usage: start.sh STATE_DIR}")
if virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "libvirt: libvirtd already answers on qemu:///system"
  exit 0
fi
mkdir -p "$D" /run/libvirt
X=(); [ -n "${NETNS:-}" ] && X=(ip netns exec "$NETNS")
pgrep -x virtlogd >/dev/null || virtlogd -d -p "$D/virtlogd.pid"   # writes the serial consoles
"${X[@]}" libvirtd -d -p "$D/libvirtd.pid"
# the first start probes QEMU's capabilities (~12 s here); later ones take 0.1 s
for _ in $(seq 600); do
  virsh -c qemu:///system version >/dev/null 2>&1 && { echo "libvirt: libvirtd ready (pid $(cat "$D/libvirtd.pid"))"; exit 0; }
  sleep 0.1
done
echo "libvirt: libvirtd did not answer within 60 s" >&2
exit 1
