#!/usr/bin/env bash
# Make $KERNEL_SRC a Linux 6.12 tree with the project in it:
#  1. unpack Debian's linux-source-6.12 once;
#  2. bring patches/ to the state of the repo: patches already applied that
#     no longer match are reversed (newest first), the rest applied, so that
#     editing a patch touches only the files it changes;
#  3. link every project file (fs/, drivers/, rust/, include/, lib/,
#     Documentation/) into the tree, so an edit in the repo is seen by the
#     next incremental build. A project file may not shadow a kernel file:
#     changes to existing files are patches.
. "$(dirname "$0")/lib.sh"

OVERLAY_DIRS=(fs drivers rust include lib Documentation)
PATCHES=${PATCHES:-$TOP/patches}
state=$KERNEL_SRC/.gemfs-state

if [ ! -f "$KERNEL_SRC/Makefile" ]; then
	[ -n "$KERNEL_TARBALL" ] || die "no kernel tarball; run scripts/setup-host.sh"
	log "unpacking $KERNEL_TARBALL"
	tmp=$BUILD_DIR/.unpack.$$
	rm -rf "$tmp" && mkdir -p "$tmp"
	tar -C "$tmp" -xf "$KERNEL_TARBALL"
	mkdir -p "$(dirname "$KERNEL_SRC")"
	mv "$tmp"/linux-source-* "$KERNEL_SRC"
	rm -rf "$tmp"
	mkdir -p "$state/applied"
	# The pristine list of files: what the overlay may never replace.
	(cd "$KERNEL_SRC" && find "${OVERLAY_DIRS[@]}" -type f | sort) >"$state/pristine-files"
fi
mkdir -p "$state/applied"

# --- patches ---------------------------------------------------------------
# 0000-cover-letter.patch introduces the series and changes nothing.
mapfile -t want < <(cd "$PATCHES" && ls -1 [0-9]*.patch 2>/dev/null | grep -vx '0000-cover-letter.patch' || true)
mapfile -t have < <(cd "$state/applied" && ls -1 [0-9]*.patch 2>/dev/null || true)
keep=0
while [ $keep -lt ${#want[@]} ] && [ $keep -lt ${#have[@]} ] &&
	[ "${want[$keep]}" = "${have[$keep]}" ] &&
	cmp -s "$PATCHES/${want[$keep]}" "$state/applied/${have[$keep]}"; do
	keep=$((keep + 1))
done
for ((i = ${#have[@]} - 1; i >= keep; i--)); do
	log "reverting ${have[$i]}"
	patch -d "$KERNEL_SRC" -p1 -R -s --no-backup-if-mismatch <"$state/applied/${have[$i]}" ||
		die "cannot revert ${have[$i]}; remove $KERNEL_SRC to start over"
	rm "$state/applied/${have[$i]}"
done
for ((i = keep; i < ${#want[@]}; i++)); do
	log "applying ${want[$i]}"
	patch -d "$KERNEL_SRC" -p1 -s -N --no-backup-if-mismatch <"$PATCHES/${want[$i]}" ||
		die "${want[$i]} does not apply to $(make -s -C "$KERNEL_SRC" kernelversion)"
	cp "$PATCHES/${want[$i]}" "$state/applied/"
done

# --- overlay ---------------------------------------------------------------
# Drop links to project files that are gone.
find "${OVERLAY_DIRS[@]/#/$KERNEL_SRC/}" -type l -lname "$TOP/*" 2>/dev/null |
	while read -r l; do [ -e "$l" ] || rm -f "$l"; done
cd "$TOP"
git ls-files --cached --others --exclude-standard -- "${OVERLAY_DIRS[@]}" |
	while read -r f; do
		[ -e "$f" ] || continue
		if grep -qxF "$f" "$state/pristine-files"; then
			die "$f is a kernel file: change it with a patch in patches/"
		fi
		dst=$KERNEL_SRC/$f
		if [ "$(readlink "$dst" 2>/dev/null)" != "$TOP/$f" ]; then
			mkdir -p "$(dirname "$dst")"
			ln -sfn "$TOP/$f" "$dst"
		fi
	done
log "tree ready: $KERNEL_SRC ($(ls "$state/applied" | wc -l) patches)"
