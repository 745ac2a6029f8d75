#!/usr/bin/env python3
"""Judge one `make fstests` run (scripts/fstests.sh) from its logs.

<logs>/results/<fs>/result.xml is fstests' xunit report for each filesystem,
<logs>/console.log the guest's kernel console. The run passes when every
test that passed on tmpfs also passed on gemfs, both filesystems ran tests,
and the console shows no kernel splat (scripts/check-results.py's SPLAT).
Prints the comparison and a last line "N passed, N failed": tests that
tmpfs passed, and whether gemfs passed them too (plus one failure per
problem of the run itself).
"""
import argparse
import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def check_results_module():
    """scripts/check-results.py, whose console check (SPLAT) `make test` uses."""
    spec = importlib.util.spec_from_file_location(
        "check_results", TOP / "scripts" / "check-results.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def outcomes(result_xml):
    """{test: "pass" | "fail" | "notrun"} and {test: message} from fstests'
    xunit report (the message: why it failed or did not run)."""
    res, why = {}, {}
    for case in ET.parse(result_xml).getroot().iter("testcase"):
        name = case.get("name")
        res[name] = "pass"
        for tag, status in (("skipped", "notrun"), ("failure", "fail"), ("error", "fail")):
            el = case.find(tag)
            if el is not None:
                res[name] = status
                why[name] = el.get("message", "")
                break
    return res, why


def head(path, n=12):
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ["    (no %s)" % path.name]
    out = ["    " + l for l in lines[:n]]
    if len(lines) > n:
        out.append("    ... (%d more lines in %s)" % (len(lines) - n, path))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", type=Path)
    ap.add_argument("--qemu-rc", type=int, default=0)
    ap.add_argument("--wall", type=int, default=None, help="guest wall time (s)")
    ap.add_argument("--filesystems", default="tmpfs gemfs")
    args = ap.parse_args()

    cr = check_results_module()
    tally = cr.Tally()
    fss = args.filesystems.split()
    res, why = {}, {}
    for fs in fss:
        xml = args.logs / "results" / fs / "result.xml"
        if not xml.is_file():
            tally.fail(f"{fs}: no fstests report ({xml})")
            res[fs], why[fs] = {}, {}
            continue
        res[fs], why[fs] = outcomes(xml)
        n = {k: sum(1 for v in res[fs].values() if v == k) for k in ("pass", "fail", "notrun")}
        print(f"{fs}: {n['pass']} passed, {n['fail']} failed, {n['notrun']} not run")
        if n["pass"] + n["fail"] == 0:
            tally.fail(f"{fs}: ran no test")

    runner = (args.logs / "runner.log").read_text(errors="replace") if (args.logs / "runner.log").is_file() else ""
    for line in runner.splitlines():
        if line.startswith("FSTESTS: fatal") or line.startswith("RUNNER-HOST: timeout"):
            tally.fail(line.strip())
    if "FSTESTS: done" not in runner:
        tally.fail("the guest did not finish (no 'FSTESTS: done')")
    if args.qemu_rc not in (0,):
        tally.fail(f"qemu exited with {args.qemu_rc}")

    console = args.logs / "console.log"
    cr.check_console(console.read_text(errors="replace") if console.is_file() else "", tally)

    if len(fss) == 2 and all(res[fs] for fs in fss):
        ref, new = fss
        a, b = res[ref], res[new]
        tests = sorted(set(a) | set(b))
        both = [t for t in tests if a.get(t) == "pass" and b.get(t) == "pass"]
        fail_both = [t for t in tests if a.get(t) == "fail" and b.get(t) == "fail"]
        ref_only = [t for t in tests if a.get(t) == "pass" and b.get(t) != "pass"]
        new_only = [t for t in tests if b.get(t) == "pass" and a.get(t) != "pass"]
        print(f"\npassed on both ({len(both)}): {' '.join(both)}")
        print(f"\nfailed on both ({len(fail_both)}): {' '.join(fail_both)}")
        for t in fail_both:
            print(f"  {t} ({new}):")
            print("\n".join(head(args.logs / "results" / new / (t + ".out.bad"), 6)))
        if new_only:
            print(f"\npassed on {new} only ({len(new_only)}): {' '.join(new_only)}")
        print(f"\npassed on {ref} only ({len(ref_only)}): {' '.join(ref_only)}")
        for t in ref_only:
            print(f"  {t}: {new} {b.get(t, 'missing')}: {why[new].get(t, '')}")
            if b.get(t) == "fail":
                print("\n".join(head(args.logs / "results" / new / (t + ".out.bad"))))
            dmesg = args.logs / "results" / new / (t + ".dmesg")
            if dmesg.is_file():
                print("\n".join(head(dmesg)))
            tally.fail(f"{t}: passed on {ref}, {b.get(t, 'missing')} on {new}")
        tally.passed = len(both)
    if args.wall is not None:
        print(f"\nwall time: {args.wall // 3600}h{args.wall % 3600 // 60:02d}m{args.wall % 60:02d}s")
    if tally.problems:
        print("\nproblems:")
        for p in tally.problems:
            print("  " + p)
    print(f"{tally.passed} passed, {tally.failed} failed")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
