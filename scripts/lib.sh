# Shared settings of the build scripts; sourced, not run.
# Every path can be overridden from the environment (see README.md).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$TOP/.build}
KERNEL_TARBALL=${KERNEL_TARBALL:-$(ls -1 /usr/src/linux-source-6.12.tar.xz 2>/dev/null || true)}
KERNEL_SRC=${KERNEL_SRC:-$BUILD_DIR/linux}
JOBS=${JOBS:-$(($(nproc) + 1))}
RUSTC=${RUSTC:-/usr/bin/rustc}
BINDGEN=${BINDGEN:-$HOME/.cargo/bin/bindgen}
# Debian's rustc 1.96 (rustc-web) builds the kernel: its library source is in
# rust-web-src. The rustup toolchain has none, so it must not come first.
export PATH=/usr/bin:$PATH

kmake() {
	local out=$1
	shift
	make -C "$KERNEL_SRC" O="$out" LLVM=1 RUSTC="$RUSTC" \
		RUSTDOC="${RUSTDOC:-/usr/bin/rustdoc}" BINDGEN="$BINDGEN" -j"$JOBS" "$@"
}

log() { printf '[%(%T)T] %s\n' -1 "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
