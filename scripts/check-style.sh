#!/usr/bin/env bash
# Style and build gates: rustfmt on every project Rust file, checkpatch on
# the C files and the patch series, clippy through the kernel build
# (CLIPPY=1) on the test configuration, the external module build of
# gemfs and softgpu, and Kconfig's dependencies (scripts/check-deps.sh).
. "$(dirname "$0")/lib.sh"

cd "$TOP"
fail=0
mapfile -t rs < <(git ls-files '*.rs' ':!tests/**')
if [ ${#rs[@]} -gt 0 ]; then
	/usr/bin/rustfmt --edition 2021 --config-path "$KERNEL_SRC/.rustfmt.toml" --check "${rs[@]}" || fail=1
fi
"$HOME/.cargo/bin/cargo" fmt --manifest-path tests/Cargo.toml --all --check || fail=1
# checkpatch misreads a relative patch path inside a git work tree: give it
# absolute ones.
cp="$KERNEL_SRC/scripts/checkpatch.pl --no-tree --quiet --strict --ignore FILE_PATH_CHANGES"
for p in "$TOP"/patches/*.patch; do
	[ -e "$p" ] || continue
	# The cover letter has no diff for checkpatch to check.
	[ "${p##*/}" = 0000-cover-letter.patch ] && continue
	$cp "$p" || { echo "checkpatch: $p"; fail=1; }
done
mapfile -t cfiles < <(git ls-files '*.c' '*.h')
for f in "${cfiles[@]}"; do
	ignore=
	# Rust cannot emit export-table entries in 6.12; this file exports the
	# Rust functions, so no export can follow its definition.
	[ "$f" = fs/gemfs/gemfs_exports.c ] && ignore="--ignore EXPORT_SYMBOL"
	# TRACE_EVENT() definitions are laid out as in every header of
	# include/trace/events/, which checkpatch's alignment rules dislike.
	case "$f" in include/trace/events/*.h)
		ignore="--ignore OPEN_ENDED_LINE,PARENTHESIS_ALIGNMENT" ;;
	esac
	$cp $ignore -f "$TOP/$f" || { echo "checkpatch: $f"; fail=1; }
done
# clippy: rebuild the Rust objects of the test kernel with CLIPPY=1. gemfs
# and softgpu are modules there: they are built (and linted) out of tree
# below.
out=$BUILD_DIR/out-test
if [ -f "$out/.config" ]; then
	touch rust/kernel/*.rs fs/gemfs/*.rs drivers/gpu/drm/softgpu/*.rs 2>/dev/null || true
	kmake "$out" CLIPPY=1 bzImage modules 2>&1 | tee "$BUILD_DIR/clippy.log" | grep -E '^(warning|error)' && fail=1
	# The external module build of the top-level Kbuild against the test
	# kernel, what `make -C $KERNEL_SRC O=$out M=$PWD modules` does, here
	# from a copy so that no object lands in the work tree. modpost checks
	# that every symbol they use is exported (softgpu's from gemfs).
	ext=$BUILD_DIR/extmod
	mkdir -p "$ext"
	git ls-files -z Kbuild fs/gemfs drivers/gpu/drm/softgpu | xargs -0 cp --parents -u -t "$ext"
	if ! kmake "$out" M="$ext" CLIPPY=1 modules >"$BUILD_DIR/extmod.log" 2>&1; then
		grep -E 'error|ERROR' "$BUILD_DIR/extmod.log" | head -20
		echo "external module build failed: $BUILD_DIR/extmod.log"
		fail=1
	fi
	grep -E '^(warning|error)' "$BUILD_DIR/extmod.log" && fail=1
	for ko in fs/gemfs/gemfs.ko drivers/gpu/drm/softgpu/softgpu.ko; do
		[ -f "$ext/$ko" ] || { echo "external module build: no $ko"; fail=1; }
	done
fi
# Kconfig: every dependency of gemfs and softgpu declared.
"$TOP/scripts/check-deps.sh" || fail=1
[ $fail = 0 ] && echo "style: clean"
exit $fail
