#!/usr/bin/env bash
# Build the guest's userspace (tests/ workspace) as static executables:
# the tests, collected one per crate in $BUILD_DIR/userspace/tests/<crate>,
# and the workspace's programs (bin targets: the benchmark), collected in
# $BUILD_DIR/userspace/bench/<bin>.
# Host-side Rust: the rustup toolchain is right here (not for the kernel).
. "$(dirname "$0")/lib.sh"

CARGO=${CARGO:-$HOME/.cargo/bin/cargo}
dest=$BUILD_DIR/userspace/tests
bench=$BUILD_DIR/userspace/bench
export CARGO_TARGET_DIR=$BUILD_DIR/cargo
export RUSTFLAGS="-C target-feature=+crt-static"
target=x86_64-unknown-linux-gnu

log "building userspace tests"
json=$("$CARGO" test --manifest-path "$TOP/tests/Cargo.toml" --locked --release \
	--target $target --workspace --no-run --message-format=json-render-diagnostics)
rm -rf "$dest" && mkdir -p "$dest"
# One test executable per crate, named after the crate.
python3 -c '
import json, os, shutil, sys
dest = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["profile"]["test"] and "test" in m["target"]["kind"]:
        name = os.path.basename(os.path.dirname(m["manifest_path"]))
        shutil.copy(m["executable"], f"{dest}/{name}")
        print(name)
' "$dest" <<<"$json" | sed 's/^/  test binary: /' >&2

log "building userspace programs"
json=$("$CARGO" build --manifest-path "$TOP/tests/Cargo.toml" --locked --release \
	--target $target --workspace --bins --message-format=json-render-diagnostics)
rm -rf "$bench" && mkdir -p "$bench"
python3 -c '
import json, shutil, sys
dest = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and not m["profile"]["test"] and "bin" in m["target"]["kind"]:
        name = m["target"]["name"]
        shutil.copy(m["executable"], f"{dest}/{name}")
        print(name)
' "$bench" <<<"$json" | sed 's/^/  program: /' >&2
