#!/usr/bin/env bash
# make fstests: run fstests (xfstests) on tmpfs, then on gemfs, in the same
# guest, and judge gemfs against tmpfs (tests/fstests/judge.py).
#
#  1. fstests' source: FSTESTS_SRC=<checkout>, else a clone of FSTESTS_GIT
#     in $BUILD_DIR/fstests/src (needs the network).
#  2. A Debian root made with debootstrap in $BUILD_DIR/fstests/root, with
#     fstests' dependencies and users; a copy of fstests in /opt/fstests,
#     taught gemfs (tests/fstests/teach-gemfs.sh) and built in a chroot.
#  3. That root as an ext4 image (mke2fs -d), booted read-only-snapshot on
#     virtio-blk under QEMU (TCG) with the fstests kernel flavour, the same
#     machine shape as scripts/run-vm.sh (2 NUMA nodes). A second disk (a
#     tar) carries the run's control files in, a third (a tar) the results
#     out.
#
# Each step is redone only when its inputs changed.
# Environment: FSTESTS_SRC, FSTESTS_GIT, PROFILE (default, huge_always,
# huge_within_size, noswap), GROUP (quick), TESTS ("generic/001 ..."
# instead of GROUP), FILESYSTEMS ("tmpfs gemfs"), MEM (4G), SMP (2),
# TIMEOUT (s, 4 h), DEBIAN_MIRROR, RUN_TAG.
. "$(dirname "$0")/lib.sh"

FSTESTS_GIT=${FSTESTS_GIT:-https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROFILE=${PROFILE:-default}
GROUP=${GROUP:-quick}
TESTS=${TESTS:-}
FILESYSTEMS=${FILESYSTEMS:-tmpfs gemfs}
MEM=${MEM:-4G}
SMP=${SMP:-2}
TIMEOUT=${TIMEOUT:-14400}
fst=$BUILD_DIR/fstests
out=$BUILD_DIR/out-fstests
here=$TOP/tests/fstests

case "$PROFILE" in
default) mount_opts= ;;
huge_always) mount_opts=huge=always ;;
huge_within_size) mount_opts=huge=within_size ;;
noswap) mount_opts=noswap ;;
*) die "PROFILE must be default, huge_always, huge_within_size or noswap, not '$PROFILE'" ;;
esac
[ -f "$here/expunge/$PROFILE" ] || die "no expunge file $here/expunge/$PROFILE"
[ "$(id -u)" = 0 ] || die "debootstrap, chroot and mke2fs -d need root"
mkdir -p "$fst"

# --- 1. fstests' source ----------------------------------------------------
if [ -z "${FSTESTS_SRC:-}" ]; then
	FSTESTS_SRC=$fst/src
	if [ ! -f "$FSTESTS_SRC/check" ]; then
		log "cloning fstests from $FSTESTS_GIT"
		rm -rf "$FSTESTS_SRC.tmp"
		git clone -q --depth 1 "$FSTESTS_GIT" "$FSTESTS_SRC.tmp" ||
			die "cannot clone fstests from $FSTESTS_GIT (no network?); pass FSTESTS_SRC=<fstests checkout>"
		mv "$FSTESTS_SRC.tmp" "$FSTESTS_SRC"
	fi
fi
FSTESTS_SRC=$(cd "$FSTESTS_SRC" && pwd)
[ -f "$FSTESTS_SRC/check" ] && [ -f "$FSTESTS_SRC/common/rc" ] ||
	die "FSTESTS_SRC=$FSTESTS_SRC is not an fstests checkout"

# --- 2. the Debian root ----------------------------------------------------
root=$fst/root
PKGS=(xfsprogs attr acl bc psmisc perl fio gawk util-linux e2fsprogs quota
	procps kmod iproute2 python3 file bsdextrautils xxd libcap2-bin xfsdump
	sqlite3
	build-essential autoconf automake libtool pkg-config make uuid-dev
	libattr1-dev libacl1-dev libaio-dev liburing-dev xfslibs-dev
	libgdbm-dev libgdbm-compat-dev libcap-dev)
root_sum=$({ echo "${PKGS[*]}"; cat "$here/init"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/.gemfs-root" 2>/dev/null)" != "$root_sum" ]; then
	command -v debootstrap >/dev/null || {
		log "installing debootstrap"
		apt-get install -y -q debootstrap >/dev/null
	}
	log "making the Debian guest root in $root (debootstrap, takes a while)"
	rm -rf "$root.tmp"
	debootstrap --variant=minbase --include="$(IFS=,; echo "${PKGS[*]}")" \
		bookworm "$root.tmp" "$DEBIAN_MIRROR" >"$fst/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $fst/debootstrap.log"
	# The users fstests expects (its README).
	chroot "$root.tmp" groupadd fsgqa
	chroot "$root.tmp" useradd -m -g fsgqa fsgqa
	chroot "$root.tmp" useradd -m -g fsgqa fsgqa2
	chroot "$root.tmp" useradd -m --badname 123456-fsgqa
	chroot "$root.tmp" apt-get clean
	echo fstests >"$root.tmp/etc/hostname"
	install -m 755 "$here/init" "$root.tmp/sbin/fstests-init"
	rm -rf "$root"
	mv "$root.tmp" "$root"
	echo "$root_sum" >"$root/.gemfs-root"
fi

# fstests, taught gemfs, built in the root. Redone when the source, the
# lesson or the root changed.
src_id=$( (cd "$FSTESTS_SRC" && { git rev-parse HEAD 2>/dev/null; git status --porcelain 2>/dev/null; } || find . -newer check | head -100) | sha256sum | cut -d' ' -f1)
build_sum=$(echo "$src_id $(sha256sum <"$here/teach-gemfs.sh") $root_sum" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/opt/fstests/.gemfs-build" 2>/dev/null)" != "$build_sum" ]; then
	log "building fstests from $FSTESTS_SRC in the guest root"
	rm -rf "$root/opt/fstests"
	mkdir -p "$root/opt/fstests"
	tar -C "$FSTESTS_SRC" --exclude=.git -cf - . | tar -C "$root/opt/fstests" -xf -
	"$here/teach-gemfs.sh" "$root/opt/fstests"
	unshare -m chroot "$root" /bin/sh -c \
		"mount -t proc proc /proc && mount -t devtmpfs dev /dev && cd /opt/fstests && make -j$JOBS" \
		>"$fst/build.log" 2>&1 || die "building fstests failed; see $fst/build.log"
	echo "$build_sum" >"$root/opt/fstests/.gemfs-build"
fi

# --- 3. the disk images and the run ----------------------------------------
img=$fst/root.img
if [ ! -f "$img" ] || [ "$(cat "$img.sum" 2>/dev/null)" != "$build_sum" ]; then
	log "making the root image $img"
	rm -f "$img"
	mke2fs -q -t ext4 -L fstests -d "$root" "$img" 6G
	echo "$build_sum" >"$img.sum"
fi

[ -f "$out/arch/x86/boot/bzImage" ] || die "no fstests kernel; run scripts/build-kernel.sh fstests"
logs=$fst/runs/$PROFILE
[ -z "${RUN_TAG:-}" ] || logs+=-$RUN_TAG
rm -rf "$logs"
mkdir -p "$logs/control" "$logs/results"
cp "$here/guest-run.sh" "$logs/control/"
cp "$here/expunge/$PROFILE" "$logs/control/expunge"
{
	printf 'PROFILE=%q\n' "$PROFILE"
	printf 'MOUNT_OPTS=%q\n' "$mount_opts"
	printf 'GROUP=%q\n' "$GROUP"
	printf 'TESTS=%q\n' "$TESTS"
	printf 'FILESYSTEMS=%q\n' "$FILESYSTEMS"
} >"$logs/control/params"
tar -C "$logs/control" -cf "$logs/control.tar" .
truncate -s 0 "$logs/results.tar"
truncate -s 512M "$logs/results.tar"

mem_mb=$(numfmt --from=iec "$MEM" | awk '{print int($1 / 1048576)}')
half=$((mem_mb / 2))
what=${TESTS:-group $GROUP}
log "booting the fstests guest: $what on $FILESYSTEMS, profile $PROFILE (${MEM}, $SMP cpus, 2 NUMA nodes, timeout ${TIMEOUT}s); logs in $logs"
start=$(date +%s)
set +e
timeout --foreground -k 10 "$TIMEOUT" nice qemu-system-x86_64 -accel tcg \
	-m "$mem_mb" -smp "$SMP,sockets=$SMP,cores=1,threads=1" \
	-object memory-backend-ram,id=m0,size=${half}M \
	-object memory-backend-ram,id=m1,size=$((mem_mb - half))M \
	-numa node,nodeid=0,cpus=0,memdev=m0 \
	-numa node,nodeid=1,cpus=$([ "$SMP" -gt 2 ] && echo "1-$((SMP - 1))" || echo 1),memdev=m1 \
	-display none -monitor none -no-reboot \
	-serial "file:$logs/console.log" -serial stdio \
	-drive "file=$img,format=raw,if=virtio,snapshot=on" \
	-drive "file=$logs/control.tar,format=raw,if=virtio,readonly=on" \
	-drive "file=$logs/results.tar,format=raw,if=virtio" \
	-kernel "$out/arch/x86/boot/bzImage" \
	-append "console=ttyS0 root=/dev/vda rw init=/sbin/fstests-init panic=-1 printk.devkmsg=on" \
	</dev/null | tee "$logs/runner.log"
rc=${PIPESTATUS[0]}
set -e
echo "RUNNER-HOST: qemu exit $rc after $(($(date +%s) - start))s" | tee -a "$logs/runner.log"
[ "$rc" = 124 ] && echo "RUNNER-HOST: timeout after ${TIMEOUT}s" | tee -a "$logs/runner.log"
tar -C "$logs/results" -xf "$logs/results.tar" 2>/dev/null ||
	echo "RUNNER-HOST: no results from the guest" | tee -a "$logs/runner.log"
rm -f "$logs/results.tar"
python3 "$here/judge.py" --qemu-rc "$rc" --wall "$(($(date +%s) - start))" \
	--filesystems "$FILESYSTEMS" "$logs"
