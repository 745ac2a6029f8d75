#!/usr/bin/env bash
# Build the series in patches/ one patch at a time: every prefix of it, on
# top of the 6.12 source with the project's files in it, must configure and
# build (bzImage and modules, test config), as a bisection through the
# series would. Runs in a tree of its own, $BUILD_DIR/series, so the tree
# that make test uses is never touched; each step is an incremental build
# of the previous one. The first step (the whole series) is a full build.
#
# The project's own options (GEMFS before "fs: add gemfs to the build",
# DRM_SOFTGPU before "drm: add softgpu to the build") drop out of the
# config of a step that does not hook them up yet; every other value the
# test config's fragments request must survive, as build-kernel.sh checks
# for the whole series.
#
# Environment: SERIES_FROM=N (start at the N-th patch, 1-based; default 1).
. "$(dirname "$0")/lib.sh"

series=$BUILD_DIR/series
out=$series/out
export KERNEL_SRC=$series/linux
mapfile -t all < <(cd "$TOP/patches" && ls -1 [0-9]*.patch | grep -vx '0000-cover-letter.patch')
[ ${#all[@]} -gt 0 ] || die "no patches in $TOP/patches"
mkdir -p "$series"

step() { # step N: the first N patches applied, built
	local n=$1 dir=$series/patches
	rm -rf "$dir" && mkdir -p "$dir"
	for ((i = 0; i < n; i++)); do cp "$TOP/patches/${all[$i]}" "$dir/"; done
	log "series: [$n/${#all[@]}] ${all[$((n - 1))]}"
	BUILD_DIR=$series PATCHES=$dir "$TOP/scripts/prepare-tree.sh"
	cp "$series/full.config" "$out/.config"
	kmake "$out" -s olddefconfig
	# Only an option of the project's (its Kconfig entry is in a project
	# file, linked into the tree, which grep -r does not follow) may drop.
	local bad=0 line opt
	while IFS= read -r line; do
		opt=${line%%=*}
		case "$line" in CONFIG_*=y | CONFIG_*=m) ;; *) continue ;; esac
		grep -qxF "$line" "$out/.config" && continue
		if grep -rqs --include='Kconfig*' -E "^(menu)?config ${opt#CONFIG_}\$" "$series/linux"; then
			echo "  $line: got $(grep -E "^(# )?$opt[= ]" "$out/.config" || echo unset)"
			bad=1
		fi
	done < <(cat "$TOP/configs/common.config" "$TOP/configs/test.config")
	[ $bad = 0 ] || die "after ${all[$((n - 1))]}: config values lost (above)"
	kmake "$out" bzImage modules >"$series/build-$n.log" 2>&1 ||
		{ tail -40 "$series/build-$n.log"; die "after ${all[$((n - 1))]}: the build fails (log: $series/build-$n.log)"; }
}

# The full series first: it gives the config every step starts from.
BUILD_DIR=$series PATCHES=$TOP/patches "$TOP/scripts/prepare-tree.sh"
BUILD_DIR=$series O=$out "$TOP/scripts/build-kernel.sh" test
cp "$out/.config" "$series/full.config"
for ((n = ${SERIES_FROM:-1}; n < ${#all[@]}; n++)); do
	step "$n"
done
# And back to the whole series, so the tree is left as the repo says.
step ${#all[@]}
log "series: each of the ${#all[@]} patches builds on its own"
