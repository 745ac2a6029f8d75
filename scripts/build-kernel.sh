#!/usr/bin/env bash
# Configure and build one kernel flavour ("test" or "bench") into
# $BUILD_DIR/out-<flavour>. The config is x86_64 tinyconfig plus
# configs/common.config plus configs/<flavour>.config; it is regenerated only
# when a fragment changed, so rebuilds stay incremental.
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: build-kernel.sh test|bench}
out=${O:-$BUILD_DIR/out-$flavour}
frags=("$TOP/configs/common.config" "$TOP/configs/$flavour.config")
[ -f "${frags[1]}" ] || die "no config fragment ${frags[1]}"
mkdir -p "$out"

stamp=$out/.gemfs-config-stamp
sum=$(cat "${frags[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$out/.config" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
	log "configuring $flavour kernel"
	kmake "$out" -s tinyconfig
	"$KERNEL_SRC/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" \
		"${frags[@]}" >"$out/merge_config.log"
	kmake "$out" -s olddefconfig
	# Every requested value must have survived olddefconfig; a dropped one
	# means an unmet dependency, which would otherwise go unnoticed.
	bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n) opt=${line%=n}
			! grep -q "^$opt=" "$out/.config" || { echo "  $line: got $(grep "^$opt=" "$out/.config")"; bad=1; } ;;
		CONFIG_*=*) grep -qxF "$line" "$out/.config" ||
			{ echo "  $line: got $(grep -E "^(# )?${line%%=*}[= ]" "$out/.config" || echo unset)"; bad=1; } ;;
		esac
	done < <(cat "${frags[@]}")
	[ $bad = 0 ] || die "config fragments did not apply (unmet dependencies above)"
	echo "$sum" >"$stamp"
fi

log "building $flavour kernel in $out"
kmake "$out" bzImage modules
log "built $(cat "$out/include/config/kernel.release")"
