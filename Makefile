# gemfs: build a Linux 6.12 kernel with the project in it, boot it in QEMU,
# and run the tests (make test) or the benchmark (make run). See README.md.
#
# Overridable: BUILD_DIR (.build), KERNEL_SRC, JOBS, TIMEOUT, MEM, SMP, VRAM,
# KVM=1, ONLY=<test binary>, SKIP=<libtest --skip patterns>,
# APPEND=<kernel parameters>, REPEAT=N (make run:
# each headline fragmentation measurement N times, default 3; the report
# shows medians and min-max), QUICK=1 (make run: the headline at 50 % only,
# no other guests); make fstests: FSTESTS_SRC, PROFILE, GROUP, TESTS (see
# scripts/fstests.sh).

SHELL := /bin/bash
S := scripts
export BUILD_DIR ?= $(CURDIR)/.build

.PHONY: all run test fstests setup tree kernel-test kernel-bench kernel-fstests userspace \
	initramfs-test initramfs-bench boot-test boot-bench bench-guests bench-report test-runner fuzz soak \
	check check-series clean

all: test

## make test: set up, build the test kernel, run every test in the guest,
## then the runner's self-test. Exits non-zero on any failure or splat.
test: setup tree kernel-test userspace initramfs-test
	@$(S)/test.sh

## make run: set up, build the bench kernel and run the benchmark in the guest;
## run-vm.sh then reports it (scripts/bench-report.py: tables, results.json,
## results.csv and PNG plots in $(BUILD_DIR)/runs/bench-run/) and fails if the
## benchmark failed or produced no results; bench-guests.sh adds the guest
## memory axis (two more guests) and pageblock mixing (a guest with
## page_owner=on), and reports again. QUICK=1: the frag phase at 50 % only
## (its three repetitions), in the main guest alone.
QUICK_BENCH := runner.bench=--phases,frag,--levels,50,--scale-bo-kb=
run: setup tree kernel-bench userspace initramfs-bench
	@$(if $(filter 1,$(QUICK)),APPEND="$(QUICK_BENCH) $(APPEND)") $(S)/run-vm.sh bench run
	@$(if $(filter 1,$(QUICK)),true,$(S)/bench-guests.sh)

## make fstests: fstests on tmpfs, then on gemfs, in one guest (a Debian
## root made with debootstrap); gemfs must pass what tmpfs passes.
## FSTESTS_SRC=<fstests checkout> (else cloned from upstream),
## PROFILE=default|huge_always|huge_within_size|noswap, GROUP=quick or
## TESTS="generic/001 ...". Not part of make test: it needs the network.
fstests: setup tree kernel-fstests
	@$(S)/fstests.sh

setup:
	@$(S)/setup-host.sh
tree:
	@$(S)/prepare-tree.sh
kernel-test kernel-bench kernel-fstests: kernel-%: tree
	@$(S)/build-kernel.sh $*
userspace:
	@$(S)/build-userspace.sh
initramfs-test initramfs-bench: initramfs-%: kernel-% userspace
	@$(S)/mkinitramfs.sh $*

## Incremental loops: rebuild what changed and boot, without set-up.
boot-test: initramfs-test
	@$(S)/run-vm.sh test test
boot-bench: initramfs-bench
	@$(S)/run-vm.sh bench run
## The other guests alone, after a boot-bench.
bench-guests: initramfs-bench
	@$(S)/bench-guests.sh
## The report of the last benchmark run again, from its logs.
bench-report:
	@/usr/bin/python3 $(S)/bench-report.py $(BUILD_DIR)/runs/bench-run \
		$(foreach d,$(wildcard $(BUILD_DIR)/runs/bench-run-mem*),--mem-run $(d)) \
		$(foreach d,$(wildcard $(BUILD_DIR)/runs/bench-run-owner),--owner-run $(d))
## make fuzz: the uAPI fuzzer alone on the test kernel for FUZZ_S seconds
## (default 3600), with FUZZ_SEED to repeat a run.
FUZZ_S ?= 3600
fuzz: setup tree initramfs-test
	@TIMEOUT=$$(($(FUZZ_S) + 1200)) ONLY=softgpu-fuzz \
		APPEND="runner.fuzz_secs=$(FUZZ_S) $(if $(FUZZ_SEED),runner.fuzz_seed=$(FUZZ_SEED)) $(APPEND)" \
		$(S)/run-vm.sh test test
## make soak: the fuzzer's workers for SOAK_MIN minutes (default 30) with
## stress-ng's memory stressors and a memory block offlined and onlined in
## a loop beside them; every private BO's contents checked as they go.
SOAK_MIN ?= 30
soak: setup tree initramfs-test
	@TIMEOUT=$$(($(SOAK_MIN) * 60 + 1200)) ONLY=softgpu-fuzz \
		APPEND="runner.fuzz_secs=$$(($(SOAK_MIN) * 60)) runner.fuzz_soak=1 $(APPEND)" \
		$(S)/run-vm.sh test test
test-runner: initramfs-test
	@$(S)/test-runner-faults.sh

## Style: rustfmt, clippy (the kernel's CLIPPY=1), checkpatch on C and patches.
check: tree
	@$(S)/check-style.sh

## make check-series: every prefix of patches/ builds (bzImage and modules,
## test config), in a tree of its own under $(BUILD_DIR)/series. Long: an
## incremental kernel build per patch.
check-series: setup
	@$(S)/check-series.sh

clean:
	rm -rf $(BUILD_DIR)
