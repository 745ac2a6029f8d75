#!/usr/bin/env bash
# Assemble the guest's initramfs for one kernel flavour:
#   /init (tests/guest/init), busybox, stress-ng and its shared libraries,
#   /tests/* (userspace test executables), /kmod/*.ko (tests/kmod, built
#   against this kernel), /bench/* (the workspace's programs, i.e. the
#   benchmark, when built) and /bench/run (tests/guest/bench-run, which
#   the init runs in run mode). Both flavours get the same userspace.
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: mkinitramfs.sh test|bench}
out=${O:-$BUILD_DIR/out-$flavour}
img=$BUILD_DIR/initramfs-$flavour.cpio.gz
root=$BUILD_DIR/initramfs-$flavour
[ -f "$out/arch/x86/boot/bzImage" ] || die "build the $flavour kernel first"

# External test modules: built out of the repo (6.12 writes objects into M=).
kmod=$BUILD_DIR/kmod-$flavour
mkdir -p "$kmod"
cp -u "$TOP"/tests/kmod/* "$kmod/"
kmake "$out" M="$kmod" modules >"$kmod/build.log" 2>&1 ||
	{ cat "$kmod/build.log"; die "test modules failed to build"; }

rm -rf "$root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,tests,kmod,bench,lib,lib64}
cp "$TOP/tests/guest/init" "$root/init"
cp /bin/busybox "$root/bin/busybox"
cp "$kmod"/*.ko "$root/kmod/"
if [ -d "$BUILD_DIR/userspace/tests" ]; then
	cp "$BUILD_DIR"/userspace/tests/* "$root/tests/"
fi
if [ -d "$BUILD_DIR/userspace/bench" ]; then
	cp -r "$BUILD_DIR"/userspace/bench/. "$root/bench/"
fi
cp "$TOP/tests/guest/bench-run" "$root/bench/run"
chmod +x "$root/bench/run"
# stress-ng is dynamically linked: bring its libraries along.
for bin in /usr/bin/stress-ng; do
	cp "$bin" "$root/bin/"
	# The loader (/lib64/ld-linux-x86-64.so.2) is the line without "=>".
	# POSIX awk only: Debian's awk is mawk, which has no \s.
	ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
	while read -r lib; do
		[ -f "$lib" ] || continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$img"
log "initramfs: $img ($(du -h "$img" | cut -f1))"
