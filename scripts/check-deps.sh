#!/usr/bin/env bash
# Kconfig dependency checks of gemfs and softgpu (make check).
#
# Each configs/deps/<name>.config turns one dependency off on top of
# configs/deps/base.config (x86_64 tinyconfig plus the least both need, as
# modules). Its header names what it is about:
#   # refuses: CONFIG_X ...  Kconfig must refuse these (they do not stick),
#                            or else the objects they build must compile;
#   # builds: CONFIG_X ...   these must stick, and their objects compile.
# Configuring is cheap (no build) as long as every dependency is declared;
# only an option that sticks is built, and only its own directory (with the
# rust/ crates it needs), in $BUILD_DIR/out-deps/<name>, kept between runs.
# A missing "depends on" thus fails here instead of in a user's build.
. "$(dirname "$0")/lib.sh"
export LC_ALL=C

declare -A dir_of=([CONFIG_GEMFS]=fs/gemfs/ [CONFIG_DRM_SOFTGPU]=drivers/gpu/drm/softgpu/)
base=$TOP/configs/deps/base.config
fail=0

# What a configuration depends on besides its fragments: the project's
# Kconfig files and the series (which hooks them in).
kconfig_sum=$(cat "$TOP/fs/gemfs/Kconfig" "$TOP/drivers/gpu/drm/softgpu/Kconfig" \
	"$TOP"/patches/*.patch | sha256sum | cut -d' ' -f1)

# configure <out> <fragment>...: tinyconfig + fragments, then require that
# every line of the last fragment stuck. Left alone when nothing it depends
# on changed, so that a kept build stays incremental.
configure() {
	local out=$1 line opt bad=0 sum
	shift
	sum=$( (echo "$kconfig_sum"; cat "$@") | sha256sum | cut -d' ' -f1)
	mkdir -p "$out"
	if [ ! -f "$out/.config" ] || [ "$(cat "$out/.deps-stamp" 2>/dev/null)" != "$sum" ]; then
		rm -f "$out/.deps-stamp"
		kmake "$out" -s tinyconfig
		"$KERNEL_SRC/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$@" \
			>"$out/merge_config.log"
		kmake "$out" -s olddefconfig
		echo "$sum" >"$out/.deps-stamp"
	fi
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n) opt=${line%=n}
			! grep -q "^$opt=" "$out/.config" || { echo "  $line did not stick"; bad=1; } ;;
		CONFIG_*=*) grep -qxF "$line" "$out/.config" || { echo "  $line did not stick"; bad=1; } ;;
		esac
	done <"${@: -1}"
	return $bad
}

is_set() { grep -qE "^$1=[ym]$" "$2/.config"; }

# Where each exported symbol is exported: "symbol file" lines.
exports_index() {
	local idx=$BUILD_DIR/out-deps/exports.idx
	local dirs="arch/x86 block drivers/base drivers/dma-buf drivers/gpu drivers/pci fs init kernel lib mm security"
	if [ ! -s "$idx" ] || [ "$(cat "$idx.stamp" 2>/dev/null)" != "$kconfig_sum $dirs" ]; then
		# shellcheck disable=SC2086 # the directories are words
		(cd "$KERNEL_SRC" && grep -rHoE --include='*.[cS]' \
			'EXPORT_(PER_CPU_)?(SYMBOL|TRACEPOINT_SYMBOL|STATIC_CALL)[A-Z_]*\( *[A-Za-z0-9_]+' \
			$dirs) |
			sed -E 's/^([^:]*):.*\( *([A-Za-z0-9_]+)$/\2 \1/' | sort -u >"$idx"
		echo "$kconfig_sum $dirs" >"$idx.stamp"
	fi
	echo "$idx"
}

# link_check <name> <out> <dir>...: what a compile does not show, that the
# modules would not load: every symbol they use must be defined in their
# own objects, the rust/ crates, or the kernel file that exports it, as
# this configuration compiles that file (an export inside an #ifdef that is
# off is missing: shmem_write_begin() without TMPFS, say).
link_check() {
	local name=$1 out=$2 idx sym file bad=0
	shift 2
	idx=$(exports_index)
	(cd "$out" && for d in "$@"; do llvm-nm -u "$d"*.o; done) | awk '$1 == "U" {print $2}' | sort -u \
		>"$out/undefined.txt"
	(cd "$out" && llvm-nm --defined-only rust/*.o rust/helpers/*.o \
		$(for d in "$@"; do echo "$d"*.o; done) 2>/dev/null) | awk 'NF == 3 {print $3}' |
		sort -u >"$out/defined.txt"
	# __this_module is the module's own, made at its final link.
	comm -23 "$out/undefined.txt" "$out/defined.txt" | { grep -vx '__this_module' || true; } \
		>"$out/external.txt"
	join "$out/external.txt" "$idx" >"$out/needed.txt"
	join -v1 "$out/external.txt" "$idx" | sed 's/^/  not exported anywhere: /' |
		tee "$out/missing.txt"
	[ -s "$out/missing.txt" ] && bad=1
	# The exporting files, compiled for this configuration: a symbol is
	# there if one of them defines it. A file that does not compile on its
	# own (kernel/sched/ builds its files #included into a few) proves
	# nothing either way: its symbols are not judged.
	mapfile -t files < <(awk '{print $2}' "$out/needed.txt" | sort -u)
	kmake "$out" -k "${files[@]/%.[cS]/.o}" >>"$out/build.log" 2>&1 || true
	for file in "${files[@]}"; do
		if [ -f "$out/${file%.*}.o" ]; then
			llvm-nm --defined-only "$out/${file%.*}.o" | awk -v f="$file" 'NF == 3 {print $3, f}'
		else
			awk -v f="$file" '$2 == f {print $1, f}' "$out/needed.txt"
		fi
	done | sort -u >"$out/exported.txt"
	comm -23 <(awk '{print $1}' "$out/needed.txt" | sort -u) \
		<(sort -u "$out/needed.txt" | comm -12 - "$out/exported.txt" | awk '{print $1}' | sort -u) |
		sed 's/^/  not defined in this configuration by the file exporting it: /' |
		tee "$out/undefined-here.txt"
	[ -s "$out/undefined-here.txt" ] && bad=1
	return $bad
}

# build <name> <out> <option>...: compile the objects of these options,
# then check that they would link.
build() {
	local name=$1 out=$2 dirs=() o
	shift 2
	for o in "$@"; do dirs+=("${dir_of[$o]}"); done
	log "deps $name: building ${dirs[*]}"
	if ! kmake "$out" "${dirs[@]}" >"$out/build.log" 2>&1; then
		grep -E '^(error|ERROR)|error:|undefined' "$out/build.log" | head -20
		echo "deps $name: ${*} kept, and failed to build ($out/build.log)"
		return 1
	fi
	if ! link_check "$name" "$out" "${dirs[@]}"; then
		echo "deps $name: ${*} kept, and would not link"
		return 1
	fi
}

log "deps: base"
configure "$BUILD_DIR/out-deps/base" "$base" ||
	die "configs/deps/base.config does not apply: the checks would prove nothing"

# Arguments: only these fragments (names without .config).
only=" $* "
for frag in "$TOP"/configs/deps/*.config; do
	name=$(basename "$frag" .config)
	[ "$name" = base ] && continue
	[ $# = 0 ] || [[ "$only" == *" $name "* ]] || continue
	out=$BUILD_DIR/out-deps/$name
	read -ra refuses < <(sed -n 's/^# refuses://p' "$frag") || true
	read -ra builds < <(sed -n 's/^# builds://p' "$frag") || true
	if ! configure "$out" "$base" "$frag"; then
		echo "deps $name: the fragment does not apply (a selected option?)"
		fail=1
		continue
	fi
	want=()
	for o in "${refuses[@]}"; do
		if is_set "$o" "$out"; then
			echo "deps $name: Kconfig does not refuse $o: a missing \"depends on\"?"
			want+=("$o")
		fi
	done
	for o in "${builds[@]}"; do
		if is_set "$o" "$out"; then
			want+=("$o")
		else
			echo "deps $name: $o was refused, but does not need what $name turns off"
			fail=1
		fi
	done
	if [ ${#want[@]} -gt 0 ] && ! build "$name" "$out" "${want[@]}"; then
		fail=1
		continue
	fi
	log "deps $name: refused ${refuses[*]:-nothing}${want:+, built ${want[*]}}"
done
exit $fail
