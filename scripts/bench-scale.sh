#!/usr/bin/env bash
# The guest memory axis of the benchmark's scaling (make run, after the main
# run of run-vm.sh): boots the bench kernel again with other memory sizes
# (SCALE_MEM, default "2G 6G"; the main run is 4G), runs the fragmentation
# phase at the size-scaling level there, then reports the main run again
# with those runs added (scripts/bench-report.py --mem-run).
. "$(dirname "$0")/lib.sh"

main=$BUILD_DIR/runs/bench-run
[ -f "$main/runner.log" ] || die "no main benchmark run in $main: run make run"
level=${SCALE_LEVEL:-50}
status=0
mem_runs=()
for mem in ${SCALE_MEM:-2G 6G}; do
	log "guest memory scaling: $mem"
	MEM=$mem RUN_TAG=mem$mem \
		APPEND="runner.bench=--phases,frag,--levels,$level,--scale-bo-kb=,--no-thp-test ${APPEND:-}" \
		"$TOP/scripts/run-vm.sh" bench run >/dev/null || status=1
	mem_runs+=(--mem-run "$main-mem$mem")
done
log "report with the guest memory scaling"
python3 "$TOP/scripts/bench-report.py" "$main" "${mem_runs[@]}" || status=1
exit $status
