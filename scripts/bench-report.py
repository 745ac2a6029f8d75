#!/usr/bin/env python3
"""Report one benchmark run (make run) from its runner log.

Reads LOGDIR/runner.log (the guest runner's port, where /bench/run prints
softgpu-bench's "BENCH-RESULT <json>" lines and "bench: done rc=N"), and
writes next to it:

  results.json  every record, with the benchmark's exit status
  results.csv   one row per record, nested fields flattened with dots
  hugepages.png huge pages obtained against fill level, per mode
  ratio.png     gemfs/control and pinned/control against fill level
  scaling.png   those ratios against object count, object size and guest
                memory
  userptr.png   huge pages per userptr-frag mode (control, userptr-hmm,
                userptr-pinned), and userptr-bind throughput per mode
  pageblocks.png  mixed pageblocks per mode (with --owner-run)

make run boots other guests after the main one (scripts/bench-guests.sh):
runs with other guest memory sizes, given with --mem-run LOGDIR, whose
fill-level results make the guest memory scaling; and a run with
page_owner=on, given with --owner-run LOGDIR, the only one whose
/proc/pagetypeinfo counts mixed pageblocks (pageblocks of one migrate type
holding pages allocated as another: unmovable pages in movable pageblocks
are what keeps compaction from freeing a whole pageblock).

It prints the tables: per fill level, mode, huge pages obtained, ratio to
control, compaction counters and times (emulated: the guest runs under TCG,
so only ratios measured side by side mean much), the free memory each
mode's run started from, then the headline (with
repetitions, --repeat: the median over them and the min-max of the ratio
to control, each repetition against its own control; and compaction
throughput per migrated page, gemfs's against control's), the cost phases and
the userptr rows (userptr-frag: huge pages with anonymous memory bound as
HMM-mirrored or pinned userptr against the same memory unbound;
userptr-bind: bind + first GPU access throughput, HMM against pinned), the
frag-stress rows (the fragmentation measurement with stress-ng's memory
stressors running while the objects are allocated), the age rows (the
same measurement after rounds of churn with objects of mixed sizes freed
and allocated among it), the vram rows (discrete mode's VRAM overcommitted
by TTM objects: huge pages with gemfs-backed eviction and with ttm_pool's
against control, evictions, and GEM_MOVE throughput against memcpy) and
the mixed pageblocks of the page_owner run.

Exit status 1 if the run has no results, if the benchmark did not finish
or exited non-zero, if any record says ok=false, or if a result line does
not parse; 0 otherwise.
"""
import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

PREFIX = "BENCH-RESULT "
DONE = re.compile(r"bench: done rc=(-?\d+)")
MODES = ["control", "pinned", "gemfs"]
USERPTR_MODES = ["control", "userptr-hmm", "userptr-pinned"]
VRAM_MODES = ["control", "gemfs", "ttm-pool"]
TARGET = 0.95
# gemfs's compaction throughput per migrated page, against control's.
COMPACT_TARGET = 0.5


def parse_log(text):
    """(records, bench exit status or None, lines that did not parse)."""
    records, bad, rc = [], [], None
    for line in text.splitlines():
        line = line.rstrip("\r")
        i = line.find(PREFIX)
        if i >= 0:
            try:
                rec = json.loads(line[i + len(PREFIX):])
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                records.append(rec)
            except ValueError as e:
                bad.append(f"{e}: {line[:200]}")
            continue
        m = DONE.search(line)
        if m:
            rc = int(m.group(1))
    return records, rc, bad


def flatten(rec, prefix=""):
    out = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def write_csv(path, records):
    rows = [flatten(r) for r in records]
    first = ["phase", "mode", "target", "level", "rep", "ok"]
    rest = sorted({k for r in rows for k in r} - set(first))
    cols = [c for c in first if any(c in r for r in rows)] + rest
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def table(title, header, rows):
    print(f"\n{title}")
    if not rows:
        print("  (none)")
        return
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in cells:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def get(rec, *path):
    for p in path:
        if not isinstance(rec, dict):
            return None
        rec = rec.get(p)
    return rec


def frag_tables(records, phase="frag", modes=MODES, what="objects"):
    frag = [r for r in records if r.get("phase") == phase]
    if phase != "frag" and not frag:
        return
    control = {(r.get("bo_kb"), r.get("level"), r.get("rep")): r.get("hugepages_obtained")
               for r in frag if r.get("mode") == "control" and r.get("ok")}
    rows, counters = [], []
    for r in sorted(frag, key=lambda r: (r.get("bo_kb") or 0, r.get("level", 0), r.get("rep", 0),
                                         modes.index(r["mode"]) if r.get("mode") in modes else 9)):
        key = (r.get("bo_kb"), r.get("level"), r.get("rep"))
        h = r.get("hugepages_obtained") if r.get("ok") else None
        c = control.get(key)
        rows.append([
            r.get("bo_kb"), f"{r.get('level')}%", r.get("rep"), r.get("mode"), r.get("ok"),
            r.get("footprint_mb"), h, r.get("hugepages_requested"),
            h / c if h is not None and c else None,
            get(r, "after_fill", "free_huge_blocks"),
            get(r, "after_compact", "free_huge_blocks"),
            get(r, "after_compact", "pageblocks", "Unmovable"),
            get(r, "thp_test", "thp_fault_alloc"),
            r.get("compact_secs_emulated"), r.get("hugetlb_secs_emulated"),
            r.get("jobs_rate_ratio_compact_vs_quiet"),
        ])
        for during in ("compact", "hugetlb"):
            d = r.get(f"vmstat_{during}") or {}
            counters.append([
                r.get("bo_kb"), f"{r.get('level')}%", r.get("rep"), r.get("mode"),
                "compact_memory" if during == "compact" else "nr_hugepages",
                d.get("compact_migrate_scanned"), d.get("compact_free_scanned"),
                d.get("compact_isolated"), d.get("compact_stall"), d.get("compact_fail"),
                d.get("compact_success"), d.get("pgmigrate_success"), d.get("pgmigrate_fail"),
            ])
    title = "Fragmentation" if phase == "frag" else f"Fragmentation, {phase}"
    table(f"{title}: huge pages after compaction, {what} in use "
          "(times emulated: guest under TCG)",
          ["obj KiB", "level", "rep", "mode", "ok", "footprint MiB", "hugepages", "requested",
           "vs control", "free 2M after fill", "after compact", "unmovable blocks", "THP faults ok",
           "compact s", "hugetlb s", "GPU jobs/s compact/quiet"], rows)
    table(f"{title}: vmstat deltas while compacting and while allocating huge pages",
          ["obj KiB", "level", "rep", "mode", "during", "migrate_scanned", "free_scanned", "isolated",
           "stall", "fail", "success", "pgmigrate_success", "pgmigrate_fail"], counters)
    free_before_table(title, frag, modes)
    failed = [r for r in frag if not r.get("ok")]
    for r in failed:
        print(f"FAIL: {phase} {r.get('mode')} {r.get('level')}%: {r.get('error')}")
    extra = []
    for r in frag:
        b = get(r, "bo_info") or {}
        g = r.get("gemfs_counters") or {}
        extra.append([r.get("bo_kb"), f"{r.get('level')}%", r.get("rep"), r.get("mode"),
                      r.get("objects"),
                      b.get("released"), b.get("refused"), b.get("gpu_faults"),
                      get(r, "verify", "checked"), get(r, "verify", "mismatches"),
                      get(r, "vmstat_total", "pswpout"), r.get("unit_secs_emulated"),
                      g.get("released_migrated"),
                      get(r, "after_compact", "Slab_kb"), get(r, "after_compact", "MemFree_kb")])
    table(f"{title}: objects (BO counters from GEM_INFO, integrity check, memory)",
          ["obj KiB", "level", "rep", "mode", "objects", "released", "refused", "GPU faults",
           "checked", "mismatches", "pswpout", "unit s", "gemfs released_migrated",
           "Slab kB", "MemFree kB"], extra)
    releases_table(title, frag)


RELEASE_BUCKETS = ["release_lt_1us", "release_lt_10us", "release_lt_100us", "release_lt_1ms",
                   "release_lt_10ms", "release_lt_100ms", "release_ge_100ms"]


def releases_table(title, frag):
    """How long softgpu took to answer gemfs's release requests over each
    gemfs run (gemfs's debugfs counters): the requests, those refused as
    busy, the mean time per request and how the requests spread over the
    decades of gemfs's histogram, and the mean time of the migration that
    followed a release (the mapping's update and the copy). Sync-mode
    requests may wait for a job's fence (up to 100 ms), async ones never
    do: the millisecond buckets are the waits."""
    rows = []
    for r in frag:
        g = r.get("gemfs_counters") or {}
        n = sum(g.get(k) or 0 for k in ("released_migrated", "released_not_migrated",
                                         "refused_busy", "refused_other"))
        if r.get("mode") != "gemfs" or not n:
            continue
        mean_us = (g.get("release_ns_total") or 0) / n / 1000
        hist = [g.get(k) for k in RELEASE_BUCKETS]
        spread = "/".join("-" if h is None else str(h) for h in hist)
        moved = g.get("released_migrated") or 0
        mig_ns = g.get("released_migrate_ns_total")
        mig_us = round(mig_ns / moved / 1000, 1) if mig_ns is not None and moved else None
        rows.append([r.get("bo_kb"), f"{r.get('level')}%", r.get("rep"), n,
                     g.get("refused_busy"), g.get("released_not_migrated"),
                     round(mean_us, 1), spread, mig_us])
    table(f"{title}: owner release requests in gemfs runs (release_ns_total / requests; "
          "requests by time taken, <1us/<10us/<100us/<1ms/<10ms/<100ms/longer; "
          "then the migration of a released folio)",
          ["obj KiB", "level", "rep", "requests", "refused busy", "released, not migrated",
           "mean us", "by decade", "migrate us"], rows)


def mib(kb):
    """KiB as whole MiB."""
    return None if kb is None else round(kb / 1024)


def free_before_table(title, frag, modes):
    """The free memory each mode's run started from (settled: caches
    dropped, memory compacted, per-CPU lists drained), per repetition, in
    the order the modes ran, and how far it is from control's of the same
    repetition; then, per repetition, the spread over its modes. MemFree
    leaves out the free pages on the per-CPU lists, shown apart."""
    rows, spreads = [], []
    units = defaultdict(list)
    for r in frag:
        units[(r.get("bo_kb"), r.get("level"), r.get("rep"))].append(r)
    for u in sorted(units, key=lambda u: (u[0] or 0, u[1] or 0, u[2] or 0)):
        rs = sorted(units[u], key=lambda r: r.get("position", 0))
        ctl = next((get(r, "settled", "MemFree_kb") for r in rs if r.get("mode") == "control"),
                   None)
        for r in rs:
            free = get(r, "settled", "MemFree_kb")
            rows.append([
                u[0], f"{u[1]}%", u[2], r.get("position"), r.get("mode"),
                mib(free), mib(get(r, "settled", "pcp_free_kb")),
                mib(get(r, "pcp_drain", "pcp_before_kb")), get(r, "pcp_drain", "refreshes"),
                mib(free - ctl) if free is not None and ctl is not None else None,
                mib(r.get("request_memfree_kb")), mib(r.get("request_pcp_free_kb")),
                r.get("hugepages_requested"),
            ])
        frees = [get(r, "settled", "MemFree_kb") for r in rs]
        frees = [f for f in frees if f is not None]
        if len(frees) > 1:
            spreads.append([u[0], f"{u[1]}%", u[2],
                            " ".join(r.get("mode", "?") for r in rs),
                            mib(max(frees) - min(frees))])
    table(f"{title}: free memory before each run (MiB; settled: caches dropped, compacted, "
          "per-CPU lists drained), and at the huge page request",
          ["obj KiB", "level", "rep", "pos", "mode", "MemFree", "per-CPU lists",
           "lists before drain", "refreshes", "MemFree - control's", "request: MemFree",
           "per-CPU lists", "requested"], rows)
    table(f"{title}: spread of the settled MemFree over the modes of each repetition (MiB)",
          ["obj KiB", "level", "rep", "order", "max - min"], spreads)


def config(records):
    env = next((r for r in records if r.get("phase") == "env"), None) or {}
    return env.get("config") or {}


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    m = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    # Counts stay counts when the median is one.
    return int(m) if isinstance(m, float) and m.is_integer() and all(
        isinstance(x, int) for x in xs) else m


def key(mode):
    """A mode's name as a key of the summaries (userptr-hmm: userptr_hmm)."""
    return mode.replace("-", "_")


def migrate_rate(r, during):
    """Pages migrated per (emulated) second while compacting (during=
    "compact": pgmigrate_success over compact_memory's time) or while
    allocating the huge pages ("hugetlb"), or None."""
    moved = get(r, f"vmstat_{during}", "pgmigrate_success")
    secs = r.get(f"{during}_secs_emulated")
    return moved / secs if moved is not None and secs else None


def rate_ratio(r, c, during):
    a, b = migrate_rate(r, during), migrate_rate(c, during)
    return a / b if a is not None and b else None


def summarise(records, keep, phase="frag", modes=MODES):
    """Per (object KiB, level), for the `phase` records `keep` accepts: the
    median over the repetitions of each mode's huge pages (and share of
    those requested), and of its ratio to control, each repetition against
    the control of the same repetition (measured next to it), with the
    ratio's min and max."""
    by = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("phase") == phase and r.get("ok") and keep(r):
            by[(r.get("bo_kb"), r["level"])][r["mode"]][r.get("rep", 0)] = r
    rows = []
    for k in sorted(by, key=lambda k: (k[0] or 0, k[1])):
        d = by[k]
        row = {"bo_kb": k[0], "level": k[1],
               "reps": max(len(v) for v in d.values())}
        control = d.get("control", {})
        for mode in modes:
            reps = d.get(mode, {})
            row[mode] = median(r.get("hugepages_obtained") for r in reps.values())
            for during in ("compact", "hugetlb"):
                row[f"{key(mode)}_{during}_rate"] = median(
                    migrate_rate(r, during) for r in reps.values())
            row[f"{mode}_of_requested"] = median(
                r.get("hugepages_obtained_of_requested") for r in reps.values())
            if mode == "control":
                continue
            ratios = [r.get("hugepages_obtained") / control[rep].get("hugepages_obtained")
                      for rep, r in reps.items()
                      if rep in control and control[rep].get("hugepages_obtained")
                      and r.get("hugepages_obtained") is not None]
            row[f"{key(mode)}_vs_control"] = median(ratios)
            row[f"{key(mode)}_vs_control_min"] = min(ratios) if ratios else None
            row[f"{key(mode)}_vs_control_max"] = max(ratios) if ratios else None
            # Compaction throughput per migrated page, against control's
            # of the same repetition.
            for during in ("compact", "hugetlb"):
                row[f"{key(mode)}_{during}_rate_vs_control"] = median(
                    rate_ratio(r, control[rep], during)
                    for rep, r in reps.items() if rep in control)
        ctl = next(iter(control.values()), {})
        row["objects"] = ctl.get("objects")
        row["footprint_mb"] = ctl.get("footprint_mb")
        rows.append(row)
    return rows


def spread(h, mode):
    """min-max of a mode's ratio to control over the repetitions, if more
    than one."""
    lo, hi = h.get(f"{key(mode)}_vs_control_min"), h.get(f"{key(mode)}_vs_control_max")
    return f"{lo:.3f}-{hi:.3f}" if h["reps"] > 1 and lo is not None else None


def headline(records):
    """Per level, with the default object size: the headline."""
    bo_kb = config(records).get("bo_kb")
    rows = summarise(records, lambda r: r.get("bo_kb") in (None, bo_kb))
    table(f"Headline: huge pages obtained, ratio to control (target for gemfs >= {TARGET}; "
          "with repetitions, medians and the ratio's min-max); compaction throughput per "
          "migrated page (pgmigrate_success per second of compact_memory, and of the huge "
          "page request), gemfs's as a ratio to control's (target >= "
          f"{COMPACT_TARGET})",
          ["level", "reps", "control", "pinned", "gemfs", "gemfs/control", "min-max",
           "pinned/control", "min-max", "gemfs meets target", "compact pages/s gemfs/control",
           "request pages/s gemfs/control"],
          [[f"{h['level']}%", h["reps"], h["control"], h["pinned"], h["gemfs"],
            h["gemfs_vs_control"], spread(h, "gemfs"), h["pinned_vs_control"],
            spread(h, "pinned"),
            None if h["gemfs_vs_control"] is None else h["gemfs_vs_control"] >= TARGET,
            h["gemfs_compact_rate_vs_control"], h["gemfs_hugetlb_rate_vs_control"]]
           for h in rows])
    table("Headline detail: pages migrated per second (emulated; pgmigrate_success over the "
          "time) while compacting and while allocating the huge pages, medians",
          ["level", "compact: control", "pinned", "gemfs", "request: control", "pinned",
           "gemfs"],
          [[f"{h['level']}%"] + [h[f"{m}_compact_rate"] for m in MODES]
           + [h[f"{m}_hugetlb_rate"] for m in MODES] for h in rows])
    # Each mode asks for as many huge pages as its free memory allows: this
    # separates fragmentation (a share below 1) from memory the mode uses.
    table("Headline detail: huge pages obtained of those requested (free memory / 2 MiB)",
          ["level", "control", "pinned", "gemfs"],
          [[f"{h['level']}%", h["control_of_requested"], h["pinned_of_requested"],
            h["gemfs_of_requested"]] for h in rows])
    return rows


def scaling_rows(h):
    return [h["control"], h["pinned"], h["gemfs"], h["gemfs_vs_control"],
            h["pinned_vs_control"], h["gemfs_compact_rate_vs_control"]]


def scaling_tables(records, heads, mem_runs):
    """Object count (the levels), object size (the scale runs) and guest
    memory (other runs) against the huge page ratios."""
    cfg = config(records)
    cols = ["control", "pinned", "gemfs", "gemfs/control", "pinned/control",
            "compact pages/s gemfs/control"]
    table(f"Scaling: object count ({cfg.get('bo_kb')} KiB objects; the fill levels)",
          ["objects", "footprint MiB", "level"] + cols,
          [[h["objects"], h["footprint_mb"], f"{h['level']}%"] + scaling_rows(h) for h in heads])
    level = cfg.get("scale_level")
    sizes = [h for h in summarise(records, lambda r: True) if h["level"] == level]
    table(f"Scaling: object size (fill level {level}%)",
          ["obj KiB", "objects", "footprint MiB"] + cols,
          [[h["bo_kb"], h["objects"], h["footprint_mb"]] + scaling_rows(h) for h in sizes])
    mem = []
    for mem_mb, recs in mem_runs:
        c = config(recs)
        for h in summarise(recs, lambda r, c=c: r.get("bo_kb") in (None, c.get("bo_kb"))):
            mem.append((mem_mb, h))
    main_mem = (next((r for r in records if r.get("phase") == "env"), {}) or {}).get("mem_total_kb")
    for h in heads:
        if h["level"] == level:
            mem.append(((main_mem or 0) // 1024, h))
    mem.sort(key=lambda m: (m[0], m[1]["level"]))
    table(f"Scaling: guest memory ({cfg.get('bo_kb')} KiB objects)",
          ["MemTotal MiB", "level", "objects"] + cols,
          [[m, f"{h['level']}%", h["objects"]] + scaling_rows(h) for m, h in mem])
    return {"count": [(h["objects"], h) for h in heads],
            "size": [(h["bo_kb"], h) for h in sizes],
            "memory": [(m, h) for m, h in mem]}


def counts(d):
    """A {reason: count} object as "reason count, ...", or None if empty."""
    return ", ".join(f"{k} {v}" for k, v in d.items()) if isinstance(d, dict) and d else None


def cost_tables(records):
    mig = [r for r in records if r.get("phase") == "migrate"]
    table("Cost: move_pages throughput between the NUMA nodes (emulated); pages not moved "
          "and calls failed under memory pressure are counted, not failures",
          ["target", "ok", "MiB", "pages moved", "moved fraction", "s", "pages/s",
           "BO released", "BO refused", "not moved", "transient call errors"],
          [[r.get("target"), r.get("ok"), r.get("mb"), r.get("pages_moved"),
            r.get("moved_fraction"), r.get("secs_emulated"), r.get("pages_per_sec_emulated"),
            get(r, "bo_info", "released"), get(r, "bo_info", "refused"),
            counts(r.get("not_moved")), counts(r.get("transient_calls"))]
           for r in mig])
    for s in (r for r in records if r.get("phase") == "migrate-summary"):
        print(f"  ratio gemfs/tmpfs pages/s: {fmt(s.get('gemfs_vs_tmpfs'))}, "
              f"pinned/tmpfs: {fmt(s.get('pinned_vs_tmpfs'))}")
    gpu = [r for r in records if r.get("phase") == "gpu"]
    table("Cost: GPU job throughput while migration churns against quiet (emulated)",
          ["mode", "ok", "MiB", "jobs/s quiet", "jobs/s churn", "churn/quiet",
           "pages moved", "of asked", "BO refused", "not moved", "transient call errors"],
          [[r.get("mode"), r.get("ok"), r.get("mb"), r.get("jobs_per_sec_quiet_emulated"),
            r.get("jobs_per_sec_churn_emulated"), r.get("churn_vs_quiet"),
            r.get("churn_pages_moved"), r.get("churn_pages_asked"),
            get(r, "bo_info", "refused"), counts(r.get("not_moved")),
            counts(r.get("transient_calls"))]
           for r in gpu])
    fault = [r for r in records if r.get("phase") == "fault"]
    table("Cost: CPU page faults on BO mappings against tmpfs (emulated pages/s)",
          ["target", "first touch", "refault", "vs tmpfs first", "vs tmpfs refault"],
          [[t, get(r, f"{t}_first_touch_pages_per_sec_emulated"),
            get(r, f"{t}_refault_pages_per_sec_emulated"),
            None if t == "tmpfs" else get(r, f"{t}_vs_tmpfs_first_touch"),
            None if t == "tmpfs" else get(r, f"{t}_vs_tmpfs_refault")]
           for r in fault if r.get("ok") for t in ("tmpfs", "gemfs", "pinned")])
    fio = [r for r in records if r.get("phase") == "fileio"]
    table("Cost: read(2)/write(2) on mount -t gemfs against tmpfs (emulated MiB/s)",
          ["block", "op", "tmpfs", "gemfs", "gemfs/tmpfs"],
          [[f"{kb}k", op, get(r, f"tmpfs_{op}_{kb}k_mb_per_sec_emulated"),
            get(r, f"gemfs_{op}_{kb}k_mb_per_sec_emulated"),
            get(r, f"gemfs_vs_tmpfs_{op}_{kb}k")]
           for r in fio if r.get("ok") for kb in (1024, 4) for op in ("write", "read")])
    fiojobs = [r for r in records if r.get("phase") == "fio"]
    table("Cost: fio on mount -t gemfs against tmpfs (fio's bandwidth, emulated MiB/s)",
          ["engine", "pattern", "block", "tmpfs", "gemfs", "gemfs/tmpfs"],
          [[e, rw, bs, r.get(f"tmpfs_{e}-{rw}-{bs}_mb_per_sec_emulated"),
            r.get(f"gemfs_{e}-{rw}-{bs}_mb_per_sec_emulated"),
            r.get(f"gemfs_vs_tmpfs_{e}-{rw}-{bs}")]
           for r in fiojobs if r.get("ok") for e in ("psync", "mmap") for bs in ("4k", "1m")
           for rw in ("read", "write", "randread", "randwrite")])
    for r in mig + gpu + fault + fio + fiojobs:
        if r.get("skipped"):
            print(f"SKIPPED: {r.get('phase')} {r.get('target') or r.get('mode')}: {r['skipped']}")
        if not r.get("ok"):
            print(f"FAIL: {r.get('phase')} {r.get('target') or r.get('mode')}: {r.get('error')}")


def stress_tables(records, where=""):
    """frag-stress: the fragmentation measurement with stress-ng running
    while the objects are allocated (`where`: which run, for the titles).
    Returns its summary rows."""
    if not any(r.get("phase") == "frag-stress" for r in records):
        return []
    frag_tables(records, "frag-stress", MODES,
                f"objects (stress-ng while allocating them{where})")
    rows = summarise(records, lambda r: True, "frag-stress")
    stressors = sorted({k for r in records if r.get("phase") == "frag-stress"
                        for k in (get(r, "stress_ng", "bogo_ops") or {})})
    table(f"Under stress-ng{where}: stressors' bogo operations while the objects were "
          "allocated",
          ["level", "rep", "mode", "stress-ng s"] + stressors,
          [[f"{r.get('level')}%", r.get("rep"), r.get("mode"),
            get(r, "stress_ng", "secs_emulated")]
           + [get(r, "stress_ng", "bogo_ops", k) for k in stressors]
           for r in records if r.get("phase") == "frag-stress"])
    table(f"Under stress-ng{where}: huge pages obtained, ratio to control",
          ["obj KiB", "level", "reps", "control", "pinned", "gemfs", "gemfs/control", "min-max",
           "pinned/control", "min-max"],
          [[h["bo_kb"], f"{h['level']}%", h["reps"], h["control"], h["pinned"], h["gemfs"],
            h["gemfs_vs_control"], spread(h, "gemfs"), h["pinned_vs_control"],
            spread(h, "pinned")] for h in rows])
    return rows


def age_tables(records):
    """age: the fragmentation measurement after rounds of churn with objects
    of mixed sizes freed and allocated among it. Returns its summary rows."""
    recs = [r for r in records if r.get("phase") == "age"]
    if not recs:
        return []
    sizes = next((r.get("object_kb") for r in recs if r.get("object_kb")), None)
    frag_tables(records, "age", MODES, f"objects of {sizes} KiB, aged")
    table("Ageing: the rounds (objects freed and allocated among each round's churn)",
          ["level", "rep", "mode", "round", "churn MiB", "freed", "freed MiB", "added",
           "added MiB", "live MiB"],
          [[f"{r.get('level')}%", r.get("rep"), r.get("mode"), a.get("round"),
            a.get("churn_mb"), a.get("removed"), a.get("removed_mb"), a.get("added"),
            a.get("added_mb"), a.get("live_mb")]
           for r in recs for a in (r.get("age_rounds") or [])])
    rows = summarise(records, lambda r: True, "age")
    table("Ageing: huge pages obtained after the rounds, ratio to control",
          ["level", "reps", "control", "pinned", "gemfs", "gemfs/control", "min-max",
           "pinned/control", "min-max", "compact pages/s gemfs/control"],
          [[f"{h['level']}%", h["reps"], h["control"], h["pinned"], h["gemfs"],
            h["gemfs_vs_control"], spread(h, "gemfs"), h["pinned_vs_control"],
            spread(h, "pinned"), h["gemfs_compact_rate_vs_control"]] for h in rows])
    return rows


def vram_tables(records):
    """vram: TTM objects overcommitting VRAM (twice over by default),
    evicted into system memory among short-lived memory, then compaction
    and a huge page request; and the GEM_MOVE throughput against memcpy."""
    recs = [r for r in records if r.get("phase") == "vram"]
    moves = [r for r in records if r.get("phase") == "vram-move"]
    if not recs and not moves:
        return
    table("VRAM overcommit: per repetition and mode (emulated times)",
          ["rep", "mode", "ok", "VRAM MiB", "objects", "obj KiB", "system MiB",
           "MemFree before MiB", "evictions", "in VRAM", "passes: MemFree drop MiB",
           "Shmem growth MiB", "passes s", "moves s",
           "compact s", "requested", "obtained", "verified", "mismatches"],
          [[r.get("rep"), r.get("mode"), r.get("ok"), r.get("vram_mb"), r.get("objects"),
            r.get("bo_kb"), r.get("system_footprint_mb"),
            mib(get(r, "settled", "MemFree_kb")), r.get("evictions"),
            r.get("objects_in_vram"), r.get("cycles_memfree_drop_mb"),
            r.get("cycles_shmem_growth_mb"), r.get("cycle_secs_emulated"),
            r.get("cycle_move_secs_emulated"), r.get("compact_secs_emulated"),
            r.get("hugepages_requested"), r.get("hugepages_obtained"),
            get(r, "verify", "checked"), get(r, "verify", "mismatches")]
           for r in recs])
    sums = [r for r in records if r.get("phase") == "vram-summary"]
    by = {k: [s.get(k) for s in sums] for k in ("gemfs_vs_control", "ttm_pool_vs_control")}

    def mm(xs):
        xs = [x for x in xs if x is not None]
        return f"{min(xs):.3f}-{max(xs):.3f}" if len(xs) > 1 else None
    g = median(by["gemfs_vs_control"])
    table(f"VRAM overcommit: huge pages obtained, ratio to control (target for gemfs >= "
          f"{TARGET}; ttm-pool expected near pinned), medians over the repetitions",
          ["reps", "control", "gemfs", "ttm-pool", "gemfs/control", "min-max",
           "ttm-pool/control", "min-max", "gemfs meets target"],
          [[len(sums)] + [median([s.get(key(m)) for s in sums]) for m in VRAM_MODES]
           + [g, mm(by["gemfs_vs_control"]), median(by["ttm_pool_vs_control"]),
              mm(by["ttm_pool_vs_control"]), None if g is None else g >= TARGET]]
          if sums else [])
    table("VRAM move throughput: GEM_MOVE against an in-guest memcpy of as many bytes "
          "(emulated MiB/s; ratios median and min-max over the repetitions)",
          ["mode", "obj KiB", "reps", "MiB", "to VRAM", "to system", "memcpy",
           "to VRAM/memcpy", "min-max", "to system/memcpy", "min-max"],
          [[s.get("mode"), s.get("object_kb"), s.get("reps"),
            next((m.get("mb") for m in moves if m.get("mode") == s.get("mode")
                  and m.get("object_kb") == s.get("object_kb")), None)]
           + [median([m.get(f"{d}_mb_per_sec_emulated") for m in moves
                      if m.get("ok") and m.get("mode") == s.get("mode")
                      and m.get("object_kb") == s.get("object_kb")])
              for d in ("to_vram", "to_system", "memcpy")]
           + [s.get("to_vram_vs_memcpy"),
              None if s.get("reps", 0) < 2 or s.get("to_vram_vs_memcpy_min") is None
              else f"{s['to_vram_vs_memcpy_min']:.3f}-{s['to_vram_vs_memcpy_max']:.3f}",
              s.get("to_system_vs_memcpy"),
              None if s.get("reps", 0) < 2 or s.get("to_system_vs_memcpy_min") is None
              else f"{s['to_system_vs_memcpy_min']:.3f}-{s['to_system_vs_memcpy_max']:.3f}"]
           for s in records if s.get("phase") == "vram-move-summary"])
    for r in recs + moves:
        if r.get("skipped"):
            print(f"SKIPPED: {r.get('phase')}: {r['skipped']}")
        if not r.get("ok"):
            print(f"FAIL: {r.get('phase')} {r.get('mode')}: {r.get('error')}")



DMEM_STEPS = ("mirror_first", "mirror", "to_vram", "vram_first", "vram", "to_system",
              "cpu_fault_back", "memcpy")
DMEM_RATIOS = ("to_vram_vs_memcpy", "to_system_vs_memcpy", "cpu_fault_back_vs_memcpy",
               "gpu_vram_first_vs_mirror_first", "gpu_vram_vs_mirror")


def dmem_tables(records):
    """dmem: userptr memory migrated into VRAM and back (device private
    memory), GPU jobs over it migrated against mirrored, the CPU faulting
    it back; ratios of throughputs over the same bytes."""
    recs = [r for r in records if r.get("phase") == "dmem"]
    if not recs:
        return
    table("Device private memory: per repetition (emulated seconds)",
          ["rep", "ok", "MiB"] + list(DMEM_STEPS) + ["faulted back"],
          [[r.get("rep"), r.get("ok"), r.get("mb")]
           + [r.get(f"{k}_secs_emulated") for k in DMEM_STEPS] + [r.get("faulted_back")]
           for r in recs if not r.get("skipped")])
    sums = [s for s in records if s.get("phase") == "dmem-summary"]
    table("Device private memory: throughput ratios, median and min-max over the "
          "repetitions",
          ["ratio", "reps", "median", "min-max"],
          [[k, s.get("reps"), s.get(k),
            None if s.get("reps", 0) < 2 or s.get(f"{k}_min") is None
            else f"{s[f'{k}_min']:.3f}-{s[f'{k}_max']:.3f}"]
           for s in sums for k in DMEM_RATIOS])
    for r in recs:
        if r.get("skipped"):
            print(f"SKIPPED: dmem: {r['skipped']}")
        elif not r.get("ok"):
            print(f"FAIL: dmem rep {r.get('rep')}: {r.get('error')}")


def mixed(r, when):
    """(mixed movable, mixed unmovable, all mixed) pageblocks of a record
    at `when` (after_fill, after_compact), or Nones without page owner."""
    m = get(r, when, "mixed_pageblocks")
    if not isinstance(m, dict):
        return None, None, None
    return m.get("Movable"), m.get("Unmovable"), sum(v for v in m.values() if v)


def owner_tables(records):
    """The page_owner run: mixed pageblocks per phase, level and mode.
    Returns its rows as dicts."""
    frag = [r for r in records if r.get("phase") in ("frag", "frag-stress") and r.get("ok")]
    control = {(r["phase"], r.get("level"), r.get("rep")): r.get("hugepages_obtained")
               for r in frag if r.get("mode") == "control"}
    rows = []
    for r in sorted(frag, key=lambda r: (r["phase"], r.get("level", 0), r.get("rep", 0),
                                         MODES.index(r["mode"]) if r.get("mode") in MODES
                                         else 9)):
        c = control.get((r["phase"], r.get("level"), r.get("rep")))
        h = r.get("hugepages_obtained")
        fm, fu, ft = mixed(r, "after_fill")
        cm, cu, ct = mixed(r, "after_compact")
        rows.append({"phase": r["phase"], "level": r.get("level"), "rep": r.get("rep"),
                     "mode": r.get("mode"), "hugepages": h,
                     "vs_control": h / c if h is not None and c else None,
                     "fill_movable": fm, "fill_unmovable": fu, "fill_all": ft,
                     "compact_movable": cm, "compact_unmovable": cu, "compact_all": ct,
                     "unmovable_blocks": get(r, "after_compact", "pageblocks", "Unmovable"),
                     "blocks": sum(v for v in (get(r, "after_compact", "pageblocks") or {})
                                   .values() if v)})
    table("Pageblock mixing (page_owner=on run): pageblocks holding pages of another "
          "migrate type, by the pageblock's type",
          ["phase", "level", "rep", "mode", "hugepages", "vs control",
           "fill: movable mixed", "unmovable mixed", "all mixed",
           "compacted: movable mixed", "unmovable mixed", "all mixed",
           "unmovable blocks", "blocks"],
          [[w["phase"], f"{w['level']}%", w["rep"], w["mode"], w["hugepages"], w["vs_control"],
            w["fill_movable"], w["fill_unmovable"], w["fill_all"], w["compact_movable"],
            w["compact_unmovable"], w["compact_all"], w["unmovable_blocks"], w["blocks"]]
           for w in rows])
    return rows


def userptr_tables(records):
    """The userptr rows: huge pages with userptr-backed GPU memory in both
    modes against control (userptr-frag), and bind throughput, HMM against
    pinned (userptr-bind). Returns (userptr-frag summary rows, userptr-bind
    records)."""
    frag_tables(records, "userptr-frag", USERPTR_MODES, "userptr memory")
    rows = summarise(records, lambda r: True, "userptr-frag", USERPTR_MODES)
    if any(r.get("phase") == "userptr-frag" for r in records):
        table("Userptr: huge pages obtained with anonymous memory bound to the GPU as userptr, "
              "ratio to the same memory unbound (control)",
              ["obj KiB", "level", "reps", "control", "userptr-hmm", "userptr-pinned",
               "hmm/control", "min-max", "pinned/control", "min-max"],
              [[h["bo_kb"], f"{h['level']}%", h["reps"], h["control"], h["userptr-hmm"],
                h["userptr-pinned"], h["userptr_hmm_vs_control"], spread(h, "userptr-hmm"),
                h["userptr_pinned_vs_control"], spread(h, "userptr-pinned")] for h in rows])
    bind = [r for r in records if r.get("phase") == "userptr-bind"]
    if bind:
        table("Userptr: USERPTR bind + first GPU access (every page) throughput, "
              "MiB/s emulated",
              ["mode", "ok", "MiB", "iterations", "MiB/s", "median", "min", "max",
               "bind s", "first access s", "resident access MiB/s", "unbind s",
               "pgmigrate_success"],
              [[r.get("mode"), r.get("ok"), r.get("mb"), r.get("iterations"),
                r.get("mb_per_sec_emulated"), r.get("mb_per_sec_median_emulated"),
                r.get("mb_per_sec_min_emulated"), r.get("mb_per_sec_max_emulated"),
                r.get("bind_secs_emulated"), r.get("first_access_secs_emulated"),
                r.get("resident_mb_per_sec_emulated"), r.get("unbind_secs_emulated"),
                get(r, "vmstat", "pgmigrate_success")] for r in bind])
        for s in (r for r in records if r.get("phase") == "userptr-bind-summary"):
            print(f"  ratio hmm/pinned MiB/s (bind + first access): {fmt(s.get('hmm_vs_pinned'))}")
        for r in bind:
            if not r.get("ok"):
                print(f"FAIL: userptr-bind {r.get('mode')}: {r.get('error')}")
    return rows, bind


def plots(logdir, records, heads, scaling, userptr=((), ()), owner=()):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: no matplotlib (Debian: python3-matplotlib): no plots")
        return []
    env = next((r for r in records if r.get("phase") == "env"), {})
    shape = (f"guest: {env.get('mem_total_kb', 0) // 1024} MiB, "
             f"{len(env.get('nodes') or [])} NUMA nodes, {env.get('cpus')} vCPUs, "
             f"kernel {env.get('kernel')}")
    written = []

    def save(fig, name):
        fig.tight_layout()
        p = logdir / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    if heads:
        levels = [h["level"] for h in heads]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode, marker in zip(MODES, "os^"):
            ys = [h[mode] for h in heads]
            pts = [(x, y) for x, y in zip(levels, ys) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=mode)
        ax.set_xlabel("long-lived memory, % of guest memory")
        ax.set_ylabel("huge pages obtained (nr_hugepages)")
        ax.set_title("Huge pages after compaction, objects in use\n" + shape, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend()
        save(fig, "hugepages.png")

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, label, marker in (("gemfs_vs_control", "gemfs / control", "^"),
                                   ("pinned_vs_control", "pinned / control", "s")):
            pts = [(h["level"], h[key]) for h in heads if h[key] is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
        ax.axhline(TARGET, color="grey", linestyle="--", label=f"target {TARGET}")
        ax.set_xlabel("long-lived memory, % of guest memory")
        ax.set_ylabel("huge pages, ratio to control")
        ax.set_ylim(bottom=0)
        ax.set_title("Huge pages relative to anonymous memory\n" + shape, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend()
        save(fig, "ratio.png")

        fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
        for ax, (axis, xlabel) in zip(axes, (("count", "objects"), ("size", "object size, KiB"),
                                              ("memory", "guest MemTotal, MiB"))):
            for key, label, marker in (("gemfs_vs_control", "gemfs / control", "^"),
                                       ("pinned_vs_control", "pinned / control", "s")):
                pts = sorted((x, h[key]) for x, h in scaling.get(axis, [])
                             if x is not None and h[key] is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
            if axis in ("count", "size"):
                ax.set_xscale("log")
            ax.axhline(TARGET, color="grey", linestyle="--")
            ax.set_xlabel(xlabel)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        axes[0].set_ylabel("huge pages, ratio to control")
        axes[0].legend()
        fig.suptitle("Scaling of the huge page ratios\n" + shape, fontsize=9)
        save(fig, "scaling.png")

    ufrag, ubind = userptr
    if ufrag or ubind:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        width = 0.8 / len(USERPTR_MODES)
        for i, mode in enumerate(USERPTR_MODES):
            xs = [j + i * width for j in range(len(ufrag))]
            ax.bar(xs, [h[mode] or 0 for h in ufrag], width, label=mode)
        ax.set_xticks([j + width for j in range(len(ufrag))])
        ax.set_xticklabels([f"{h['level']}%" for h in ufrag])
        ax.set_xlabel("userptr memory, % of guest memory")
        ax.set_ylabel("huge pages obtained (nr_hugepages)")
        ax.set_title("Huge pages, userptr-backed GPU memory", fontsize=9)
        ax.legend(fontsize=8)
        ax = axes[1]
        ok = [r for r in ubind if r.get("mb_per_sec_emulated") is not None]
        ax.bar([r.get("mode") for r in ok], [r["mb_per_sec_emulated"] for r in ok],
               yerr=[[r["mb_per_sec_emulated"] - (r.get("mb_per_sec_min_emulated") or 0)
                      for r in ok],
                     [(r.get("mb_per_sec_max_emulated") or 0) - r["mb_per_sec_emulated"]
                      for r in ok]])
        ax.set_ylabel("MiB/s (emulated), bind + first GPU access")
        ax.set_title("USERPTR bind throughput (min-max of the iterations)", fontsize=9)
        fig.suptitle("Userptr\n" + shape, fontsize=9)
        save(fig, "userptr.png")

    pts = [w for w in owner if w["compact_movable"] is not None]
    if pts:
        groups = sorted({(w["phase"], w["level"]) for w in pts})
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / len(MODES)
        for i, mode in enumerate(MODES):
            ys = [median(w["compact_movable"] for w in pts
                         if (w["phase"], w["level"]) == g and w["mode"] == mode) or 0
                  for g in groups]
            ax.bar([j + i * width for j in range(len(groups))], ys, width, label=mode)
        ax.set_xticks([j + width for j in range(len(groups))])
        ax.set_xticklabels([f"{p} {lv}%" for p, lv in groups])
        ax.set_ylabel("movable pageblocks holding\nunmovable or reclaimable pages")
        ax.set_title("Mixed pageblocks after compaction (page_owner=on guest)\n" + shape,
                     fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        save(fig, "pageblocks.png")
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logdir", type=Path, help="the run's log directory ($BUILD_DIR/runs/bench-run)")
    ap.add_argument("--mem-run", type=Path, action="append", default=[],
                    help="log directory of a run with another guest memory size")
    ap.add_argument("--owner-run", type=Path,
                    help="log directory of the run with page_owner=on (mixed pageblocks)")
    args = ap.parse_args()
    log = args.logdir / "runner.log"
    if not log.exists():
        print(f"bench-report: FAIL: no {log}")
        return 1
    records, rc, bad = parse_log(log.read_text(errors="replace"))
    problems = []
    if not records:
        problems.append("the run produced no BENCH-RESULT line")
    if bad:
        problems += [f"unparsable result line: {b}" for b in bad]
    if rc is None:
        problems.append("the benchmark did not finish (no 'bench: done' line)")
    elif rc != 0:
        problems.append(f"the benchmark exited with status {rc}")
    failed = [r for r in records if r.get("ok") is not True]
    if failed:
        problems.append(f"{len(failed)} record(s) failed")

    (args.logdir / "results.json").write_text(json.dumps(
        {"log": str(log), "bench_rc": rc, "records": records}, indent=1) + "\n")
    if records:
        write_csv(args.logdir / "results.csv", records)
    env = next((r for r in records if r.get("phase") == "env"), None)
    if env:
        print(f"guest: kernel {env.get('kernel')}, MemTotal {env.get('mem_total_kb')} kB, "
              f"nodes {env.get('nodes')}, cpus {env.get('cpus')}, THP {env.get('thp_enabled')}/"
              f"{env.get('thp_defrag')}, swap {env.get('swaps')!r}")
        print(f"config: {json.dumps(env.get('config'))}")
    def other_run(d, what):
        log_d = d / "runner.log"
        recs, rc_d, bad_d = (parse_log(log_d.read_text(errors="replace"))
                             if log_d.exists() else ([], None, []))
        if not recs or rc_d != 0 or bad_d or any(r.get("ok") is not True for r in recs):
            problems.append(f"the {what} run in {d} failed or has no results")
        return recs

    mem_runs = []
    for d in args.mem_run:
        recs = other_run(d, "memory scaling")
        env_d = next((r for r in recs if r.get("phase") == "env"), {}) or {}
        mem_runs.append(((env_d.get("mem_total_kb") or 0) // 1024, recs))
    owner_recs = other_run(args.owner_run, "page owner") if args.owner_run else []
    frag_tables(records)
    heads = headline(records)
    scaling = scaling_tables(records, heads, mem_runs)
    cost_tables(records)
    userptr = userptr_tables(records)
    stress_tables(records)
    stress_tables(owner_recs, " (page_owner=on run)")
    age_tables(records)
    vram_tables(records)
    dmem_tables(records)
    owner = owner_tables(owner_recs) if args.owner_run else []
    if args.owner_run and owner and all(w["compact_all"] is None for w in owner):
        problems.append(f"the page owner run in {args.owner_run} has no mixed block counts "
                        "(did its guest boot with page_owner=on?)")
    written = (plots(args.logdir, records, heads, scaling, userptr, owner)
               if heads or any(userptr) or owner else [])
    print(f"\nresults: {args.logdir / 'results.json'}"
          + (f", {args.logdir / 'results.csv'}" if records else "")
          + "".join(f", {p}" for p in written))
    for p in problems:
        print(f"bench-report: FAIL: {p}")
    print("bench: " + ("FAILED" if problems else "ok") + f" ({len(records)} records)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
