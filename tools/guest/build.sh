#!/bin/bash
# Build the tiny test guest: a bootable disk that behaves like a cloud image, from Debian
# packages only (no download beyond apt). Usage: tools/guest/build.sh [OUT_DIR]
#   OUT_DIR (default ~/.cache/infracloud/guest) gets
#     disk.raw      bootable raw disk (MBR, one FAT partition, syslinux, kernel, initrd):
#                   upload it as an image, or give it to the libvirt driver as a base
#     vmlinuz, initrd.img   the same kernel and initramfs, for direct kernel boot
#   and is reused as is while this script and the kernel package are unchanged (cached).
# The guest runs from its initramfs. /init mounts the config drive (the first block device
# holding openstack/latest/meta_data.json: the config-2 cdrom), sets the hostname from
# meta_data.json, installs its public keys for root, configures the NIC whose MAC
# network_data.json names (static ipv4, or DHCP for ipv4_dhcp), starts dropbear on port 22
# (key logins only) and prints "infracloud-guest: READY ..." on the serial console.
# Needs (apt): busybox-static dropbear-bin cpio kmod fdisk dosfstools mtools syslinux
#              syslinux-common, and apt's package lists (apt-get update) for the kernel.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-${XDG_CACHE_HOME:-$HOME/.cache}/infracloud/guest}")

missing=()
for tool in busybox:busybox-static dropbear:dropbear-bin dropbearkey:dropbear-bin cpio:cpio \
            depmod:kmod modprobe:kmod sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools \
            syslinux:syslinux dpkg-deb:dpkg apt-get:apt; do
  PATH=$PATH:/usr/sbin:/sbin command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || missing+=(syslinux-common)
if ((${#missing[@]})); then
  echo "build-guest: missing tools; install them with: apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
export PATH=$PATH:/usr/sbin:/sbin

# the newest Debian kernel package apt knows (downloaded, never installed)
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
  echo "build-guest: apt knows no linux-image-amd64; run apt-get update first" >&2
  exit 1
fi
KV=${KPKG#linux-image-}
STAMP="$(sha256sum "$HERE/build.sh" "$HERE/init" | sha256sum | cut -c1-16) $KPKG"
if [ -f "$OUT/disk.raw" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "$OUT/disk.raw (cached)"
  exit 0
fi

mkdir -p "$OUT/cache"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
if ! ls "$OUT"/cache/"${KPKG}"_*.deb >/dev/null 2>&1; then
  rm -f "$OUT"/cache/linux-image-*.deb  # an older kernel
  (cd "$OUT/cache" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >/dev/null)
fi
# the kernel and only the module trees the guest needs
dpkg-deb --fsys-tarfile "$OUT"/cache/"${KPKG}"_*.deb | tar -x -C "$W" --wildcards './boot/vmlinuz-*' \
  './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/net/*' \
  './lib/modules/*/kernel/drivers/block/*' './lib/modules/*/kernel/drivers/scsi/*' \
  './lib/modules/*/kernel/drivers/ata/*' './lib/modules/*/kernel/drivers/cdrom/*' \
  './lib/modules/*/kernel/drivers/char/hw_random/*' './lib/modules/*/kernel/fs/isofs/*' \
  './lib/modules/*/kernel/fs/fat/*' './lib/modules/*/kernel/fs/nls/*' \
  './lib/modules/*/kernel/drivers/acpi/*' './lib/modules/*/kernel/drivers/input/*' \
  './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/net/core/*' './lib/modules/*/modules.*'
cp "$W/boot/vmlinuz-$KV" "$W/vmlinuz"
depmod -b "$W" "$KV"

# the initramfs: busybox, dropbear with the libraries it links, the modules, /init
R=$W/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,root/.ssh,etc/dropbear,var/run,var/log,mnt/config,lib/modules,lib64,lib/x86_64-linux-gnu}
ln -s bin "$R/sbin"; mkdir -p "$R/usr"; ln -s ../bin "$R/usr/bin"; ln -s ../bin "$R/usr/sbin"
cp /bin/busybox "$R/bin/busybox"
for applet in $(busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"; done
cp /usr/sbin/dropbear /usr/bin/dropbearkey "$R/bin/"
for lib in $(ldd /usr/sbin/dropbear /usr/bin/dropbearkey | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
  cp -L "$lib" "$R$lib"
done
: > "$R/etc/modules.list"
# virtio devices, the IDE cdrom with the config drive, its filesystems, the ACPI power button;
# modprobe --show-depends brings what they need (failover for virtio_net, ...) in load order
for m in virtio_pci virtio_net virtio_blk virtio_scsi virtio_rng sr_mod ata_piix ahci isofs vfat \
         nls_cp437 nls_iso8859_1 button evdev; do
  modprobe -d "$W" -S "$KV" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r f; do
    b=$(basename "$f")
    grep -qx "$b" "$R/etc/modules.list" || { cp "$f" "$R/lib/modules/"; echo "$b" >> "$R/etc/modules.list"; }
  done
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"; echo 'root:x:0:' > "$R/etc/group"
echo /bin/sh > "$R/etc/shells"
# -R: the ed25519 host key /init made (printed on the console), the others made when a
# client first asks for them (with only -r ed25519, dropbear aborts a client that prefers
# RSA host keys, as asyncssh and paramiko do)
cat > "$R/etc/inittab" <<'IT'
::respawn:/bin/dropbear -F -E -s -R -p 22
::ctrlaltdel:/bin/poweroff -f
IT
# the ACPI power button powers off (a graceful `virsh shutdown`)
mkdir -p "$R/etc/acpi/PWRF"; printf '#!/bin/sh\npoweroff\n' > "$R/etc/acpi/PWRF/00000080"
chmod +x "$R/etc/acpi/PWRF/00000080"
cat > "$R/etc/udhcpc.sh" <<'UD'
#!/bin/sh
case "$1" in bound|renew)
  ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
  for r in $router; do route add default gw "$r" dev "$interface"; break; done
  echo "$ip" > /tmp/ip;;
esac
UD
chmod +x "$R/etc/udhcpc.sh"
install -m 755 "$HERE/init" "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -6) > "$W/initrd.img"

# the bootable raw disk, without a loop mount: MBR + one FAT partition at 1 MiB + syslinux
# no_timer_check: under TCG on a busy host the kernel's early IO-APIC timer check can starve
# and panic ("IO-APIC + timer doesn't work"); the check is for real hardware
cat > "$W/syslinux.cfg" <<'SC'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0,115200n8 quiet no_timer_check
SC
SZ=$(( ( $(stat -c %s "$W/vmlinuz") + $(stat -c %s "$W/initrd.img") ) / 1048576 + 4 ))
truncate -s $((SZ + 1))M "$W/disk.raw"
echo 'start=2048, type=c, bootable' | sfdisk -q "$W/disk.raw"
mkfs.vfat -n GUESTBOOT --offset 2048 "$W/disk.raw" $((SZ * 1024)) >/dev/null
syslinux --offset $((2048 * 512)) --install "$W/disk.raw"
mcopy -i "$W/disk.raw@@1M" "$W/vmlinuz" "$W/initrd.img" "$W/syslinux.cfg" ::
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$W/disk.raw" bs=440 count=1 conv=notrunc status=none

# into place: readers never see a half-written guest
for f in vmlinuz initrd.img disk.raw; do mv -f "$W/$f" "$OUT/$f.new"; mv -f "$OUT/$f.new" "$OUT/$f"; done
echo "$STAMP" > "$OUT/.stamp"
echo "$OUT/disk.raw"
