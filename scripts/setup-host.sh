#!/usr/bin/env bash
# Install what the build and the guest need, on a fresh Debian 12 machine.
# Idempotent and quick when everything is there already.
. "$(dirname "$0")/lib.sh"

DEBS=(linux-source-6.12 rustc-web rust-web-src libclang-dev clang lld llvm
	qemu-system-x86 busybox-static stress-ng flex bison bc libelf-dev
	libssl-dev cpio xz-utils python3 python3-matplotlib kmod rustfmt-web
	rust-web-clippy)
BINDGEN_VERSION=0.73.2

missing=()
for p in "${DEBS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
	log "installing Debian packages: ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! "$BINDGEN" --version 2>/dev/null | grep -q "bindgen $BINDGEN_VERSION"; then
	log "installing bindgen-cli $BINDGEN_VERSION from crates.io"
	PATH=$HOME/.cargo/bin:$PATH cargo install --locked --force \
		--version "$BINDGEN_VERSION" bindgen-cli
fi

"$RUSTC" --version | grep -q '^rustc 1\.' || die "no usable $RUSTC"
[ -d /usr/lib/rustlib/src/rust/library ] ||
	die "rust-web-src did not install the Rust library source"
for t in qemu-system-x86_64 ld.lld clang busybox stress-ng cpio; do
	command -v "$t" >/dev/null || die "$t missing after install"
done
log "host ready: $("$RUSTC" --version), $("$BINDGEN" --version)"
