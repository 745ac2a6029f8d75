#!/usr/bin/env bash
# make test: every test in the guest on the debug kernel (with the VRAM
# device, then the uAPI tests without it), then the runner's self-test;
# one closing summary line for all.
. "$(dirname "$0")/lib.sh"

mkdir -p "$BUILD_DIR/runs"
t0=$(date +%s)
set +e
"$TOP/scripts/run-vm.sh" test test | tee "$BUILD_DIR/runs/test.summary"
main_rc=${PIPESTATUS[0]}
# Integrated mode: the same kernel in a guest without the VRAM device,
# the uAPI tests again (discrete mode's skipped, integrated mode's run;
# the benchmark smoke and the scale tests, which do not depend on it,
# once, above).
VRAM=0 ONLY=softgpu-uapi SKIP=bench::,scale:: RUN_TAG=novram \
	"$TOP/scripts/run-vm.sh" test test | tee "$BUILD_DIR/runs/test-novram.summary"
novram_rc=${PIPESTATUS[0]}
t1=$(date +%s)
"$TOP/scripts/test-runner-faults.sh" | tee "$BUILD_DIR/runs/faults.summary"
fault_rc=${PIPESTATUS[0]}
t2=$(date +%s)
set -e

read -r p1 f1 s1 < <(awk '/^[0-9]+ passed, [0-9]+ failed/ {print $1, $3, ($5 == "" ? 0 : $5)}' \
	"$BUILD_DIR/runs/test.summary" | tail -1)
read -r p3 f3 s3 < <(awk '/^[0-9]+ passed, [0-9]+ failed/ {print $1, $3, ($5 == "" ? 0 : $5)}' \
	"$BUILD_DIR/runs/test-novram.summary" | tail -1)
read -r p2 f2 < <(awk '/^runner-faults: / {print $2, $4}' "$BUILD_DIR/runs/faults.summary")
p=$((${p1:-0} + ${p2:-0} + ${p3:-0}))
f=$((${f1:-0} + ${f2:-0} + ${f3:-0}))
s1=$((${s1:-0} + ${s3:-0}))
[ "$main_rc" = 0 ] || [ "$f" -gt 0 ] || f=1 # a failure with no count still fails
[ "$novram_rc" = 0 ] || [ "${f3:-0}" -gt 0 ] || f=$((f + 1))
[ "$fault_rc" = 0 ] || [ "${f2:-0}" -gt 0 ] || f=$((f + 1))
log "guest tests (both configurations): $((t1 - t0)) s, runner self-test: $((t2 - t1)) s"
skipped=""
[ "${s1:-0}" = 0 ] || skipped=", $s1 skipped"
echo "summary: $p passed, $f failed$skipped"
[ "$main_rc" = 0 ] && [ "$novram_rc" = 0 ] && [ "$fault_rc" = 0 ]
