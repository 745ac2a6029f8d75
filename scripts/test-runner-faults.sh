#!/usr/bin/env bash
# The runner's self-test: boot the test kernel once per deliberate fault and
# require that the run fails, for the right reason. Prints one line per
# fault and a closing "N passed, N failed".
. "$(dirname "$0")/lib.sh"

declare -A expect=(
	[kunit]='FAIL: kunit: 1 failed'
	[user]='FAIL: runner-fault: deliberate_failure'
	[warn]='FAIL: kernel splat: .*deliberate warning'
	[hang]='FAIL: guest timed out'
)
# The KUnit suites each boot runs: the deliberately failing one for
# FAULT=kunit, one small passing suite otherwise (a run with no KUnit case
# fails for that reason too). Running them all would add most of a minute
# of emulated time per boot and prove nothing more here.
declare -A suites=(
	[kunit]=runner_fault
	[user]=softgpu_pt
	[warn]=softgpu_pt
	[hang]=softgpu_pt
)
pass=0 fail=0
for fault in kunit user warn hang; do
	only=none
	[ $fault = user ] && only=runner-fault
	timeout=$([ $fault = hang ] && echo 150 || echo 900)
	logf=$BUILD_DIR/runs/fault-$fault.out
	mkdir -p "$(dirname "$logf")"
	log "runner self-test: FAULT=$fault must fail the run"
	set +e
	FAULT=$fault ONLY=$only TIMEOUT=$timeout \
		APPEND="kunit.filter_glob=${suites[$fault]} ${APPEND:-}" \
		"$TOP/scripts/run-vm.sh" test test >"$logf" 2>&1
	rc=$?
	set -e
	if [ $rc != 0 ] && grep -q -- "${expect[$fault]}" "$logf"; then
		echo "ok: FAULT=$fault failed the run: $(grep -m1 -- "${expect[$fault]}" "$logf")"
		pass=$((pass + 1))
	else
		echo "not ok: FAULT=$fault: exit $rc, expected '${expect[$fault]}' (see $logf)"
		tail -5 "$logf"
		fail=$((fail + 1))
	fi
done
echo "runner-faults: $pass passed, $fail failed"
[ $fail = 0 ]
