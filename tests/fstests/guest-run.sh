#!/bin/bash
# Runs in the fstests guest (from /sbin/fstests-init, see scripts/fstests.sh):
# fstests on each of $FILESYSTEMS in turn with the same kernel, mount options
# and test list; the results go out as a tar on the third disk. Progress is
# printed on ttyS1 (the host's runner.log).
set -u
exec >/dev/ttyS1 2>&1
. /control/params

poweroff() {
	sync
	# reboot(LINUX_REBOOT_CMD_POWER_OFF): no init system in this root.
	perl -e 'syscall(169, 0xfee1dead, 672274793, 0x4321fedc)'
	sleep 10
}
fatal() {
	echo "FSTESTS: fatal: $*"
	poweroff
}

mkdir -p /dev/pts /dev/shm /mnt/test /mnt/scratch
# What udev would add to devtmpfs: check reads its expunge file through
# bash's <(...), which needs /dev/fd.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
hostname fstests
ip link set lo up || fatal "no loopback"
# Swap, so that the default profile swaps like tmpfs in use does and noswap
# differs from it: zram, 1 GiB.
echo 1G >/sys/block/zram0/disksize && mkswap -q /dev/zram0 >/dev/null &&
	swapon /dev/zram0 || fatal "no zram swap"
rm -rf /results && mkdir /results
echo "FSTESTS: kernel $(uname -r), profile $PROFILE, mount options '${MOUNT_OPTS}'"

for fs in $FILESYSTEMS; do
	# The profile's options must reach the mount, or the run tests nothing
	# of what it claims.
	mount -t "$fs" -o "size=1G${MOUNT_OPTS:+,$MOUNT_OPTS}" "${fs}_probe" /mnt/test ||
		fatal "cannot mount $fs"
	line=$(grep " /mnt/test " /proc/mounts)
	umount /mnt/test
	echo "FSTESTS: $fs mounts as: $line"
	for o in ${MOUNT_OPTS//,/ }; do
		[[ " ${line//,/ } " == *" $o "* ]] || fatal "$fs ignored mount option $o"
	done

	cat >/opt/fstests/local.config <<-CONF
	export FSTYP=$fs
	export TEST_DEV=${fs}_test
	export TEST_DIR=/mnt/test
	export SCRATCH_DEV=${fs}_scratch
	export SCRATCH_MNT=/mnt/scratch
	export RESULT_BASE=/results/$fs
	export TMPFS_MOUNT_OPTIONS="${MOUNT_OPTS:+-o $MOUNT_OPTS}"
	CONF
	mkdir -p "/results/$fs"
	if [ -n "$TESTS" ]; then
		set -- $TESTS
	else
		set -- -g "$GROUP"
	fi
	echo "FSTESTS: begin $fs"
	start=$(date +%s)
	(cd /opt/fstests && ./check -R xunit -E /control/expunge "$@") 2>&1 |
		tee "/results/$fs/check.out"
	echo "FSTESTS: end $fs rc=${PIPESTATUS[0]} seconds=$(($(date +%s) - start))"
	umount /mnt/test /mnt/scratch 2>/dev/null
	# After each filesystem: a run that times out keeps what it did.
	cp /opt/fstests/local.config "/results/$fs/"
	tar -C /results -cf /dev/vdc . || echo "FSTESTS: cannot write the results disk"
done

echo "FSTESTS: done"
poweroff
