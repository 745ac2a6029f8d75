#!/usr/bin/env bash
# Boot a flavour's kernel and initramfs in QEMU and judge the run; in run
# mode, also report the benchmark's results (scripts/bench-report.py:
# tables, results.json/csv and plots next to the logs).
#   run-vm.sh test|bench [test|run]
# One CPU per socket, so that splitting CPUs across the two NUMA nodes
# never splits a cache domain (the kernel WARNs about that).
# Environment: MEM (4G), SMP (2), TIMEOUT (s), KVM=1 (opt-in; /dev/kvm on
# this machine kind is a nested PVM host under which stock kernels
# triple-fault, so TCG is the default), FAULT=kunit|user|warn|hang (runner
# self-test), ONLY=<test binary>, SKIP=<libtest --skip patterns, comma
# separated>, APPEND (extra kernel parameters; in run
# mode runner.bench=<arguments of softgpu-bench, commas for spaces, + between
# list items>),
# RUN_TAG (suffix of the log directory), REPEAT=N (run mode: each
# headline fragmentation measurement N times, softgpu-bench --repeat N,
# added to runner.bench, whose own default is 3; the report shows medians
# and min-max), VRAM (512M; 0 for
# none: the discrete softgpu's VRAM, an ivshmem-plain PCI device 1af4:1110
# whose BAR 2, 64-bit prefetchable, is that memory).
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: run-vm.sh test|bench [test|run]}
mode=${2:-test}
out=${O:-$BUILD_DIR/out-$flavour}
img=$BUILD_DIR/initramfs-$flavour.cpio.gz
MEM=${MEM:-4G}
SMP=${SMP:-2}
VRAM=${VRAM:-512M}
# The benchmark fills, compacts and checks gigabytes under TCG: give it
# longer than the tests.
TIMEOUT=${TIMEOUT:-$([ "$mode" = run ] && echo 7200 || echo 2400)}
FAULT=${FAULT:-none}
logs=$BUILD_DIR/runs/$flavour-$mode
[ "$FAULT" = none ] || logs+=-$FAULT
# RUN_TAG: a second log directory for another run of the same kind.
[ -z "${RUN_TAG:-}" ] || logs+=-$RUN_TAG
mkdir -p "$logs"
rm -f "$logs"/{console,runner}.log

mem_mb=$(numfmt --from=iec "$MEM" | awk '{print int($1 / 1048576)}')
half=$((mem_mb / 2))
accel=(-accel tcg)
vram=()
vram_bytes=$(numfmt --from=iec "$VRAM") || die "VRAM must be a size such as 512M or 0, not '$VRAM'"
# A PCI BAR's size is a power of two (QEMU asserts it).
((vram_bytes & (vram_bytes - 1))) && die "VRAM must be 0 or a power of two, not '$VRAM'"
[ "$vram_bytes" = 0 ] ||
	vram=(-object "memory-backend-ram,id=vram,size=$vram_bytes" -device ivshmem-plain,memdev=vram)
[ "${KVM:-0}" = 1 ] && accel=(-accel kvm -cpu host)

append="console=ttyS0 panic=-1 printk.devkmsg=on runner.mode=$mode runner.fault=$FAULT"
# An oops ends the guest at once (panic=-1 and -no-reboot: QEMU exits):
# the task that oopsed may hold locks or leave its test waiting forever,
# and the run has failed already; without this, the guest sat until the
# host's timeout.
append+=" oops=panic"
# What the tests expect of the VRAM device (softgpu-uapi's vram test).
append+=" runner.vram=$vram_bytes"
# Tests of the other configuration, left out and reported as skipped
# (tests/softgpu-uapi/tests/uapi/main.rs): discrete mode's without VRAM,
# integrated mode's with it; SKIP adds more (libtest --skip patterns,
# comma separated).
if [ "$vram_bytes" = 0 ]; then skip="ttm::,dmem::"; else skip="novram::"; fi
[ -z "${SKIP:-}" ] || skip+=",$SKIP"
append+=" runner.skip=$skip"
[ -n "${ONLY:-}" ] && append+=" runner.only=$ONLY"
append+=" ${APPEND:-}"
if [ "$mode" = run ] && [ -n "${REPEAT:-}" ]; then
	[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number, not '$REPEAT'"
	if [[ "$append" == *runner.bench=* ]]; then
		append=$(sed -E "s/(^| )runner\.bench=([^ ]*)/\1runner.bench=\2,--repeat,$REPEAT/g" <<<"$append")
	else
		append+=" runner.bench=--repeat,$REPEAT"
	fi
fi

log "booting $flavour kernel ($mode, ${MEM}, $SMP cpus, 2 NUMA nodes, VRAM $VRAM, timeout ${TIMEOUT}s); logs in $logs"
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" \
	-m "$mem_mb" -smp "$SMP,sockets=$SMP,cores=1,threads=1" \
	-object memory-backend-ram,id=m0,size=${half}M \
	-object memory-backend-ram,id=m1,size=$((mem_mb - half))M \
	-numa node,nodeid=0,cpus=0,memdev=m0 \
	-numa node,nodeid=1,cpus=$([ "$SMP" -gt 2 ] && echo "1-$((SMP - 1))" || echo 1),memdev=m1 \
	"${vram[@]}" \
	-display none -monitor none -no-reboot \
	-serial "file:$logs/console.log" -serial stdio \
	-kernel "$out/arch/x86/boot/bzImage" -initrd "$img" -append "$append" \
	</dev/null | tee "$logs/runner.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 124 ] && echo "RUNNER-HOST: timeout after ${TIMEOUT}s" >>"$logs/runner.log"
status=0
python3 "$TOP/scripts/check-results.py" --mode "$mode" --kernel-src "$KERNEL_SRC" \
	--qemu-rc "$rc" "$logs" || status=$?
if [ "$mode" = run ] && [ "$FAULT" = none ]; then
	# Fails if the benchmark produced no results, failed, or did not finish.
	python3 "$TOP/scripts/bench-report.py" "$logs" || status=1
fi
exit $status
