#!/usr/bin/env bash
# The benchmark's other guests (make run, after the main run of run-vm.sh),
# then the report of the main run with their results added:
#  - the guest memory axis of the scaling: the bench kernel booted with
#    other memory sizes (SCALE_MEM, default "2G 6G"; the main run is 4G)
#    runs the fragmentation phase at the size-scaling level
#    (bench-report.py --mem-run);
#  - pageblock mixing: the main guest's shape booted with page_owner=on,
#    which /proc/pagetypeinfo needs for its "Number of mixed blocks", runs
#    frag at OWNER_LEVELS (default 50) and frag-stress (stress-ng's
#    stressors running while the objects are allocated). Page owner
#    tracking records a stack trace at every page allocation, so it runs
#    apart from the main measurements (bench-report.py --owner-run).
#    OWNER=0 skips it.
# Each measures once (REPEAT=1): the repetitions are the main run's.
. "$(dirname "$0")/lib.sh"

main=$BUILD_DIR/runs/bench-run
[ -f "$main/runner.log" ] || die "no main benchmark run in $main: run make run"
level=${SCALE_LEVEL:-50}
status=0
extra=()
for mem in ${SCALE_MEM:-2G 6G}; do
	log "guest memory scaling: $mem"
	MEM=$mem RUN_TAG=mem$mem REPEAT=1 \
		APPEND="runner.bench=--phases,frag,--levels,$level,--scale-bo-kb=,--no-thp-test ${APPEND:-}" \
		"$TOP/scripts/run-vm.sh" bench run >/dev/null || status=1
	extra+=(--mem-run "$main-mem$mem")
done
if [ "${OWNER:-1}" != 0 ]; then
	log "pageblock mixing: page_owner=on, frag at ${OWNER_LEVELS:-50}% and frag-stress"
	RUN_TAG=owner REPEAT=1 \
		APPEND="page_owner=on runner.bench=--phases,frag+frag-stress,--levels,${OWNER_LEVELS:-50},--scale-bo-kb=,--no-thp-test ${APPEND:-}" \
		"$TOP/scripts/run-vm.sh" bench run >/dev/null || status=1
	extra+=(--owner-run "$main-owner")
fi
log "report with the other guests"
python3 "$TOP/scripts/bench-report.py" "$main" "${extra[@]}" || status=1
exit $status
