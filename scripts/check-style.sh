#!/usr/bin/env bash
# Style and build gates: rustfmt on every project Rust file, checkpatch on
# the C files and the patch series, clippy through the kernel build
# (CLIPPY=1) on the test configuration, and Kconfig's dependencies
# (scripts/check-deps.sh).
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
# clippy: rebuild the Rust objects of the test kernel with CLIPPY=1.
out=$BUILD_DIR/out-test
if [ -f "$out/.config" ]; then
	touch rust/kernel/*.rs fs/gemfs/*.rs drivers/gpu/drm/softgpu/*.rs 2>/dev/null || true
	kmake "$out" CLIPPY=1 bzImage 2>&1 | tee "$BUILD_DIR/clippy.log" | grep -E '^(warning|error)' && fail=1
fi
# Kconfig: every dependency of gemfs and softgpu declared.
"$TOP/scripts/check-deps.sh" || fail=1
[ $fail = 0 ] && echo "style: clean"
exit $fail
