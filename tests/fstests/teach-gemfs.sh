#!/usr/bin/env bash
# Teach an fstests checkout gemfs: wherever fstests treats tmpfs specially
# (no block device, no mkfs or fsck, cycle_mount by remount, size= at
# mount, tmpfs's mount options), treat gemfs alike. gemfs takes tmpfs's
# mount options and reports TMPFS_MAGIC, so nothing else differs. One test
# program, vfstest --test-tmpfs (tmpfs/001), mounts tmpfs by name; it is
# taught to mount the filesystem under test.
#
#   teach-gemfs.sh <fstests directory>
#
# Edits the copy of fstests that scripts/fstests.sh builds in the guest root,
# never the user's checkout, and fails loudly when fstests changed so that an
# edit no longer applies as expected: each edit states how many places it
# must change, and the count is checked.
set -euo pipefail

dir=${1:?usage: teach-gemfs.sh <fstests directory>}
cd "$dir"
[ -f check ] && [ -f common/rc ] || { echo "teach-gemfs: $dir is not fstests" >&2; exit 1; }
if grep -q gemfs common/rc common/config check src/vfs/tmpfs-idmapped-mounts.c; then
	echo "teach-gemfs: $dir already mentions gemfs; use a fresh copy" >&2
	exit 1
fi

fail() {
	echo "teach-gemfs: $*" >&2
	echo "teach-gemfs: fstests changed; update tests/fstests/teach-gemfs.sh" >&2
	exit 1
}

# edit <file> <lines the edit must produce (new or changed)> <sed expression>
edit() {
	local file=$1 want=$2 expr=$3 got
	cp "$file" "$file.orig"
	sed -i -e "$expr" "$file"
	got=$(diff "$file.orig" "$file" | grep -c '^>' || true)
	rm "$file.orig"
	[ "$got" = "$want" ] || fail "$file: '$expr' changed $got lines, expected $want"
}

# 1. Case labels naming tmpfs ("tmpfs)", "ext2|...|tmpfs)"): mount options
#    (size=1G $TMPFS_MOUNT_OPTIONS), no mount source check, unmount by
#    mount point, cycle mount by remount, no mkfs, sized "mkfs" by size=,
#    TEST_DIR/SCRATCH_MNT requirements, no fsck, non-default SEEK_DATA,
#    no journal, casefold.
label='^\([[:space:]]*\)\(\([[:alnum:]*]*|\)*\)tmpfs\(\(|[[:alnum:]*]*\)*)[[:space:]]*\)$'
edit common/rc 11 "s/$label/\1\2tmpfs|gemfs\4/"
edit common/config 2 "s/$label/\1\2tmpfs|gemfs\4/"
edit common/casefold 5 "s/$label/\1\2tmpfs|gemfs\4/"
#    casefold's mount commands say tmpfs by name.
edit common/casefold 2 's/mount -t tmpfs -o casefold\(.*\) tmpfs \$SCRATCH_MNT/mount -t $FSTYP -o casefold\1 $FSTYP $SCRATCH_MNT/'

# 2. Default TEST_DEV names when none is configured.
edit common/config 1 's/^\([[:space:]]*if \[ "\$FSTYP" == "tmpfs" \]\)/\1 || [ "$FSTYP" == "gemfs" ]/'

# 3. A test that excludes tmpfs excludes gemfs.
edit common/rc 1 '/^_exclude_fs()$/,/^}$/s/^\([[:space:]]*\)\[ "\$1" = "\$FSTYP" \] &&/\1{ [ "$1" = "$FSTYP" ] || [ "$1.$FSTYP" = tmpfs.gemfs ]; } \&\&/'

# 4. check runs tests/tmpfs/ for gemfs (groups, -g all, exclude files), as it
#    runs tests/ext4/ for ext2/3.
edit check 3 's/^\([[:space:]]*\)if \[ "\$FSTYP" = ext2 -o "\$FSTYP" = ext3 \]; then$/\1if [ "$FSTYP" = gemfs ]; then\n\1    fsgroup=tmpfs\n\1elif [ "$FSTYP" = ext2 -o "$FSTYP" = ext3 ]; then/'
edit check 2 's/^\([[:space:]]*for d in \$SRC_GROUPS \)\$FSTYP; do$/\1$FSTYP $([ "$FSTYP" = gemfs ] \&\& echo tmpfs); do/'

# 5. tmpfs/001 (vfstest --test-tmpfs) mounts a tmpfs by name inside the
#    filesystem under test; mount the filesystem under test (--fstype).
edit src/vfs/tmpfs-idmapped-mounts.c 1 's/sys_mount("tmpfs", path, "tmpfs", 0, NULL)/sys_mount(info->t_fstype, path, info->t_fstype, 0, NULL)/'

echo "teach-gemfs: taught $dir gemfs"
