#!/usr/bin/env python3
"""Judge one guest run from its two logs.

console.log is the kernel console (ttyS0); runner.log is the guest runner's
report (ttyS1, see tests/guest/init). The run fails on any failed or crashed
KUnit case, any failed userspace test, any kernel splat in the console log
(even when every test passed), a guest that did not finish, and a run that
ran no test, and a KUnit suite of tests/kunit-suites.txt that did not
report (unless a kunit.filter_glob excludes it) or passed no case. The
last line printed is "N passed, N failed[, N skipped]".
"""
import argparse
import fnmatch
import re
import sys
from pathlib import Path

# The KUnit suites every test run must report (see the file).
SUITES_FILE = Path(__file__).resolve().parent.parent / "tests/kunit-suites.txt"

# What the kernel prints when something went wrong. Each pattern starts a
# splat; the report shows the lines after it.
SPLAT = re.compile(
    r"(------------\[ cut here \]------------"
    r"|\bWARNING: "
    r"|\bBUG: "
    r"|kernel BUG at "
    r"|\bOops: "
    r"|general protection fault"
    r"|Kernel panic - not syncing"
    r"|\bINFO: (possible|task .* blocked|trying to register non-static key|lockdep)"
    # RCU's stall detector ("rcu: INFO: rcu_sched detected stalls on
    # CPUs/tasks", "... self-detected stall on CPU", "rcu_sched kthread
    # starved for N jiffies") and the soft lockup one ("watchdog: BUG: soft
    # lockup", also caught by "BUG: ").
    r"|\bINFO: rcu_\w+ (self-)?detected stalls?"
    r"|\brcu_\w+ kthread starved for"
    r"|\bsoft lockup - CPU#"
    r"|possible (circular|recursive) locking"
    r"|inconsistent lock state"
    r"|UBSAN: "
    r"|KASAN: "
    r"|unreferenced object 0x"
    r"|rust_kernel: panicked at"
    r"|Call Trace:)"
)
# The guest runs the tests with libtest's --report-time: a status may be
# followed by the case's time, "ok <1.234s>".
LIBTEST_CASE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)(?: <([\d.]+)s>)?")
LIBTEST_RESULT = re.compile(r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored")


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.problems = []

    def fail(self, what):
        self.failed += 1
        self.problems.append(what)


def section(lines, begin, end):
    """Lines between a "RUNNER: <begin>" and the matching "RUNNER: <end>"."""
    out, inside = [], False
    for line in lines:
        if line.startswith("RUNNER: " + begin):
            inside = True
        elif inside and line.startswith("RUNNER: " + end):
            return out, line
        elif inside:
            out.append(line)
    return (out, None) if inside else (None, None)


def check_kunit(lines, console, kernel_src, tally):
    ktap, _ = section(lines, "kunit-begin", "kunit-end")
    if ktap is None:
        tally.fail("kunit: no KUnit results from the guest")
        return
    sys.path.insert(0, str(Path(kernel_src) / "tools/testing/kunit"))
    import kunit_parser  # the kernel's own KTAP parser

    test = kunit_parser.parse_run_tests(ktap)
    c = test.counts
    tally.passed += c.passed
    tally.skipped += c.skipped
    tally.failed += c.failed + c.crashed
    if c.failed or c.crashed:
        tally.problems.append(f"kunit: {c.failed} failed, {c.crashed} crashed")
    if c.errors:
        tally.fail(f"kunit: {c.errors} KTAP parse errors")
    if c.total() == 0:
        tally.fail("kunit: no KUnit test ran")
    check_expected_suites(test, kunit_filter_glob(console), tally)


def expected_suites():
    lines = SUITES_FILE.read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def kunit_filter_glob(console):
    """The kunit.filter_glob of the kernel command line, if any."""
    m = re.search(r"Command line: (.*)", console)
    if not m:
        return None
    for word in m.group(1).split():
        if word.startswith("kunit.filter_glob="):
            return word.split("=", 1)[1]
    return None


def check_expected_suites(test, glob, tally):
    """Every expected suite reported and passed a case: a suite switched
    off in the config (or not built) must not pass silently. A
    kunit.filter_glob ("suite_glob[.test_glob]") excuses the suites it does
    not match, as KUnit then does not run them."""
    suites = {s.name: s for s in test.subtests}
    suite_glob = glob.split(".", 1)[0] if glob else None
    for name in expected_suites():
        if suite_glob is not None and not fnmatch.fnmatchcase(name, suite_glob):
            continue
        s = suites.get(name)
        if s is None:
            tally.fail(f"kunit: expected suite {name} did not report")
        elif s.counts.passed == 0:
            tally.fail(f"kunit: expected suite {name} passed no case ({s.counts})")


LIBTEST_OPEN = re.compile(r"^test (\S+) \.\.\. ")
LIBTEST_LATE_STATUS = re.compile(r"^(ok|FAILED|ignored)(?: <([\d.]+)s>)?$")


def libtest_cases(body):
    """The (name, status, seconds or None) of each libtest case in a test
    binary's output.
    libtest prints "test NAME ... " when a case starts and its status when
    it ends; a case that writes to the console itself (the fuzzer's report
    goes straight to stdout, past libtest's capture) puts its lines in
    between, so the status then stands on a later line of its own."""
    cases, open_case = [], None
    for l in body:
        m = LIBTEST_CASE.match(l)
        if m:
            cases.append((m.group(1), m.group(2), seconds(m.group(3))))
            open_case = None
            continue
        m = LIBTEST_OPEN.match(l)
        if m:
            open_case = m.group(1)
            continue
        m = LIBTEST_LATE_STATUS.match(l.strip())
        if m and open_case is not None:
            cases.append((open_case, m.group(1), seconds(m.group(2))))
            open_case = None
    return cases


def seconds(s):
    return float(s) if s is not None else None


# The slowest cases, printed after the results: what to look at when the
# run nears its time budget (Documentation/dev-tools/gemfs-testing.rst).
SLOWEST = 12


def check_userspace(lines, tally):
    names = [l.split()[2] for l in lines if l.startswith("RUNNER: user-begin ")]
    timed = []
    for name in names:
        body, end = section(lines, f"user-begin {name}", f"user-end {name}")
        if end is None:
            tally.fail(f"{name}: did not finish")
            continue
        rc = int(end.rsplit("rc=", 1)[1])
        cases = libtest_cases(body)
        # Tests of the other configuration (runner.skip=): not run, so
        # skipped, never passed.
        left_out = 0
        for l in body:
            if l.startswith(f"RUNNER: user-skipped {name} "):
                left_out = int(l.split()[3])
        tally.skipped += left_out
        result = [m for m in map(LIBTEST_RESULT.match, body) if m]
        for case, status, secs in cases:
            if secs is not None:
                timed.append((secs, f"{name}: {case}"))
            if status == "ok":
                tally.passed += 1
            elif status == "ignored":
                tally.skipped += 1
            else:
                tally.fail(f"{name}: {case}")
        if not result:
            tally.fail(f"{name}: exited rc={rc} without a result line")
        elif rc != 0 and not any(status == "FAILED" for _, status, _ in cases):
            tally.fail(f"{name}: exited rc={rc}")
        skipped = f", {left_out} skipped (runner.skip)" if left_out else ""
        print(f"userspace {name}: {len(cases)} tests{skipped}, rc={rc}")
    if timed:
        total = sum(t for t, _ in timed)
        print(f"userspace tests: {total:.0f} s in all (guest time); the slowest:")
        for secs, what in sorted(timed, reverse=True)[:SLOWEST]:
            print(f"  {secs:8.1f} s  {what}")


def check_console(console, tally):
    lines = console.splitlines()
    splats = [i for i, l in enumerate(lines) if SPLAT.search(l)]
    # Report each splat once: patterns within a few lines belong together.
    shown = -100
    for i in splats:
        if i - shown < 40:
            continue
        shown = i
        # "cut here" opens a WARN/BUG: the next line says what it is.
        what = lines[i]
        if "cut here" in what and i + 1 < len(lines):
            what = lines[i + 1]
        tally.fail(f"kernel splat: {what.strip()}")
        print("---- kernel splat (console.log line %d) ----" % (i + 1))
        print("\n".join(lines[i : i + 30]))
        print("----")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="test")
    ap.add_argument("--kernel-src", required=True)
    ap.add_argument("--qemu-rc", type=int, default=0)
    ap.add_argument("logdir")
    args = ap.parse_args()
    logdir = Path(args.logdir)
    console = (logdir / "console.log").read_text(errors="replace")
    runner = (logdir / "runner.log").read_text(errors="replace")
    lines = [l.rstrip("\r") for l in runner.splitlines()]

    tally = Tally()
    if args.mode == "test":
        check_kunit(lines, console, args.kernel_src, tally)
        check_userspace(lines, tally)
    check_console(console, tally)
    if args.qemu_rc == 124:
        tally.fail("guest timed out (hang); last runner line: "
                   + next((l for l in reversed(lines) if l.startswith("RUNNER: ")), "none"))
    elif "RUNNER: done" not in lines:
        tally.fail(f"guest did not finish (qemu exit {args.qemu_rc}); see {logdir}/console.log")
    if args.mode == "test" and tally.passed + tally.failed == 0:
        tally.fail("ran no test")

    for p in tally.problems:
        print(f"FAIL: {p}")
    if args.mode != "test":
        # No tests in a run: say what was checked.
        print("run: " + ("failed" if tally.failed else "finished, no kernel splat"))
        return 1 if tally.failed else 0
    summary = f"{tally.passed} passed, {tally.failed} failed"
    if tally.skipped:
        summary += f", {tally.skipped} skipped"
    print(summary)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
