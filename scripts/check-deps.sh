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

# build <name> <out> <option>...: compile the objects of these options.
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
}

log "deps: base"
configure "$BUILD_DIR/out-deps/base" "$base" ||
	die "configs/deps/base.config does not apply: the checks would prove nothing"

for frag in "$TOP"/configs/deps/*.config; do
	name=$(basename "$frag" .config)
	[ "$name" = base ] && continue
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
