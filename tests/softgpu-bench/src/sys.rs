//! The guest's memory-management knobs and counters (procfs, sysfs,
//! debugfs), and the memory the benchmark allocates from userspace.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Display;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::json::{Obj, Put as _};

/// Errors are messages that say what failed.
pub type R<T> = Result<T, String>;

/// Adds what was being done to an error.
pub trait Ctx<T> {
    fn ctx(self, what: impl Display) -> R<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

pub const PAGE: usize = 4096;
pub const MIB: u64 = 1 << 20;

pub fn read(path: &str) -> R<String> {
    fs::read_to_string(path).ctx(format!("reading {path}"))
}

pub fn write(path: &str, value: &str) -> R<()> {
    fs::write(path, value).ctx(format!("writing {value:?} to {path}"))
}

/// `key value` lines (/proc/vmstat) or `Key: value kB` lines
/// (/proc/meminfo) as a map; lines that do not parse are skipped.
pub fn parse_counters(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let k = w.next()?.trim_end_matches(':');
            let v = w.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

pub fn vmstat() -> R<BTreeMap<String, u64>> {
    Ok(parse_counters(&read("/proc/vmstat")?))
}

/// /proc/meminfo, in KiB (HugePages_* are counts).
pub fn meminfo() -> R<BTreeMap<String, u64>> {
    Ok(parse_counters(&read("/proc/meminfo")?))
}

pub fn meminfo_kb(key: &str) -> R<u64> {
    meminfo()?
        .get(key)
        .copied()
        .ok_or_else(|| format!("no {key} in /proc/meminfo"))
}

/// The vmstat counters the benchmark reports.
pub const VMSTAT_PREFIXES: &[&str] = &[
    "compact_",
    "pgmigrate_",
    "thp_fault_",
    "thp_migration_",
    "htlb_buddy_alloc_",
    "pswpin",
    "pswpout",
    "allocstall_",
    "pgscan_",
    "pgsteal_",
];

/// `after - before` of the counters named by [`VMSTAT_PREFIXES`].
pub fn vmstat_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Obj {
    let mut o = Obj::new();
    for (k, &v) in after {
        if VMSTAT_PREFIXES.iter().any(|p| k.starts_with(p)) {
            let b = before.get(k).copied().unwrap_or(0);
            o.put(k, v as i64 - b as i64);
        }
    }
    o
}

/// Per-zone lines of /proc/buddyinfo, /proc/pagetypeinfo and the extfrag
/// files: `Node 0, zone   Normal  <values...>` as ("node0_Normal", values).
pub fn zone_lines(s: &str) -> Vec<(String, Vec<String>)> {
    s.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "Node" {
                return None;
            }
            let node = w.next()?.trim_end_matches(',');
            if w.next()? != "zone" {
                return None;
            }
            let zone = w.next()?;
            Some((
                format!("node{node}_{zone}"),
                w.map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Free blocks of at least `order` pages in /proc/buddyinfo contents,
/// counted in units of `1 << order` pages.
pub fn free_blocks_at_least(buddyinfo: &str, order: u32) -> u64 {
    zone_lines(buddyinfo)
        .iter()
        .map(|(_, counts)| {
            counts
                .iter()
                .enumerate()
                .filter(|(o, _)| *o as u32 >= order)
                .map(|(o, c)| c.parse::<u64>().unwrap_or(0) << (o as u32 - order))
                .sum::<u64>()
        })
        .sum()
}

/// The value at `order` of each zone of an extfrag debugfs file
/// (`unusable_index`, `extfrag_index`); `None` if the file is absent.
pub fn extfrag_at(file: &str, order: u32) -> Option<Obj> {
    let s = fs::read_to_string(format!("/sys/kernel/debug/extfrag/{file}")).ok()?;
    let mut o = Obj::new();
    for (zone, vals) in zone_lines(&s) {
        if let Some(v) = vals.get(order as usize).and_then(|v| v.parse::<f64>().ok()) {
            o.put(&zone, v);
        }
    }
    Some(o)
}

/// Pageblock counts by migrate type, summed over zones, from the section
/// of /proc/pagetypeinfo whose header starts with `header` ("Number of
/// blocks type", or "Number of mixed blocks" with CONFIG_PAGE_OWNER).
pub fn pagetype_section(s: &str, header: &str) -> Option<Obj> {
    let mut lines = s.lines().skip_while(|l| !l.starts_with(header));
    let head = lines.next()?;
    let names: Vec<&str> = head[header.len()..].split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for (_, vals) in zone_lines(
        &lines
            .take_while(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
    ) {
        for (i, v) in vals.iter().enumerate().take(names.len()) {
            sums[i] += v.parse::<u64>().unwrap_or(0);
        }
    }
    let mut o = Obj::new();
    for (n, v) in names.iter().zip(sums) {
        o.put(n, v);
    }
    Some(o)
}

/// The selected value of a sysfs choice file ("always [madvise] never").
pub fn selected(path: &str) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

/// A file's trimmed contents, if readable.
pub fn read_opt(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Numeric counters in a directory (e.g. /sys/kernel/debug/gemfs).
pub fn dir_counters(dir: &str) -> BTreeMap<String, u64> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let v = fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
        Some((e.file_name().to_string_lossy().into_owned(), v))
    })
    .collect()
}

/// `after - before` of every counter in `after`.
pub fn counters_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Obj {
    let mut o = Obj::new();
    for (k, &v) in after {
        o.put(k, v as i64 - before.get(k).copied().unwrap_or(0) as i64);
    }
    o
}

/// Huge page size in KiB (Hugepagesize), and its buddy order.
pub fn hugepage() -> R<(u64, u32)> {
    let kb = meminfo_kb("Hugepagesize")?;
    let pages = kb * 1024 / PAGE as u64;
    if !pages.is_power_of_two() {
        return Err(format!("odd Hugepagesize {kb} kB"));
    }
    Ok((kb, pages.trailing_zeros()))
}

/// Writes back dirty data and drops the page cache, dentries and inodes.
pub fn drop_caches() -> R<()> {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    write("/proc/sys/vm/drop_caches", "3")
}

/// Compacts all zones of all nodes; returns how long it took.
pub fn compact_memory() -> R<Duration> {
    let t = Instant::now();
    write("/proc/sys/vm/compact_memory", "1")?;
    Ok(t.elapsed())
}

/// The per-CPU lists of every zone in /proc/zoneinfo contents: the
/// (`count:`, `batch:`) pair of each pageset, free pages and batch size.
pub fn pcp_lists(zoneinfo: &str) -> Vec<(u64, u64)> {
    let mut lists = Vec::new();
    let mut count = None;
    for l in zoneinfo.lines() {
        let l = l.trim();
        if let Some(v) = l.strip_prefix("count:") {
            count = v.trim().parse::<u64>().ok();
        } else if let Some(v) = l.strip_prefix("batch:") {
            if let (Some(c), Ok(b)) = (count.take(), v.trim().parse::<u64>()) {
                lists.push((c, b));
            }
        }
    }
    lists
}

/// Free pages on the per-CPU lists now, in KiB. Those pages are free but
/// not in MemFree.
pub fn pcp_free_kb() -> R<u64> {
    let pages: u64 = pcp_lists(&read("/proc/zoneinfo")?)
        .iter()
        .map(|l| l.0)
        .sum();
    Ok(pages * PAGE as u64 / 1024)
}

const PCP_FRACTION: &str = "/proc/sys/vm/percpu_pagelist_high_fraction";
const STAT_REFRESH: &str = "/proc/sys/vm/stat_refresh";
/// Refreshes [`drain_pcp`] runs at most.
const PCP_REFRESHES: u32 = 200;

/// Whether every per-CPU list is down to its least high limit: 4 batches
/// (`zone_highsize()`'s floor, the limit with the largest fraction).
pub fn pcp_drained(lists: &[(u64, u64)]) -> bool {
    lists.iter().all(|&(count, batch)| count <= 4 * batch)
}

/// Gives the free pages on the per-CPU lists back to the buddy allocator,
/// as far as 6.12 lets userspace: no sysctl drains the lists at once. A
/// `percpu_pagelist_high_fraction` of `i32::MAX` lowers every list's high
/// limit to its floor (4 batches); the vmstat refresh then lowers a list's
/// high mark by an eighth, and frees what it holds above it, up to 32
/// batches per CPU and zone (`decay_pcp_high()`); each write of
/// `stat_refresh` runs that refresh on every CPU at once. Writes it until
/// every list is at its floor (at most [`PCP_REFRESHES`] times), then
/// restores the fraction (the default, 0, lets the limits grow again under
/// load). Returns (KiB on the lists before, after, refreshes), or `None`
/// if the kernel has neither file.
pub fn drain_pcp() -> R<Option<(u64, u64, u32)>> {
    let Some(old) = read_opt(PCP_FRACTION) else {
        return Ok(None);
    };
    if !Path::new(STAT_REFRESH).exists() {
        return Ok(None);
    }
    let before = pcp_free_kb()?;
    write(PCP_FRACTION, &i32::MAX.to_string())?;
    let refreshes = (|| -> R<u32> {
        for n in 1..=PCP_REFRESHES {
            write(STAT_REFRESH, "1")?;
            if pcp_drained(&pcp_lists(&read("/proc/zoneinfo")?)) {
                return Ok(n);
            }
        }
        Ok(PCP_REFRESHES)
    })();
    let restored = write(PCP_FRACTION, &old);
    let refreshes = refreshes?;
    restored?;
    Ok(Some((before, pcp_free_kb()?, refreshes)))
}

/// Sets vm.nr_hugepages and returns the number the kernel then has.
pub fn set_nr_hugepages(n: u64) -> R<u64> {
    write("/proc/sys/vm/nr_hugepages", &n.to_string())?;
    nr_hugepages()
}

pub fn nr_hugepages() -> R<u64> {
    read("/proc/sys/vm/nr_hugepages")?
        .trim()
        .parse()
        .ctx("parsing nr_hugepages")
}

/// Huge pages of the default size per node.
pub fn nr_hugepages_per_node(kb: u64) -> Vec<u64> {
    (0..64)
        .map_while(|n| {
            read_opt(&format!(
                "/sys/devices/system/node/node{n}/hugepages/hugepages-{kb}kB/nr_hugepages"
            ))
        })
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// What the memory looks like now: free memory, free huge-page-sized
/// blocks, fragmentation indexes at the huge page order, pageblock types.
pub fn snapshot(hp_order: u32) -> R<Obj> {
    let mut o = Obj::new();
    let mi = meminfo()?;
    for k in [
        "MemFree",
        "MemAvailable",
        "Shmem",
        "AnonPages",
        "AnonHugePages",
        "ShmemHugePages",
        "FileHugePages",
        "Mlocked",
        "Unevictable",
        "SwapFree",
        "SwapTotal",
        // Kernel memory: the drivers' per-page bookkeeping is slab
        // (large kmalloc()s included: they count as SUnreclaim), and
        // kvmalloc() falls back to vmalloc.
        "Slab",
        "SUnreclaim",
        "PageTables",
        "VmallocUsed",
        "KernelStack",
        "Percpu",
    ] {
        if let Some(v) = mi.get(k) {
            o.put(&format!("{k}_kb"), *v);
        }
    }
    // zram's compressed store (zsmalloc pages, counted in no meminfo
    // field): mem_used_total, the third field of mm_stat, in bytes.
    if let Some(used) = read_opt("/sys/block/zram0/mm_stat")
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
    {
        o.put("zram_used_kb", used / 1024);
    }
    // Free pages on the per-CPU lists: not in MemFree, nor anywhere in
    // /proc/meminfo.
    if let Ok(kb) = pcp_free_kb() {
        o.put("pcp_free_kb", kb);
    }
    o.put(
        "free_huge_blocks",
        free_blocks_at_least(&read("/proc/buddyinfo")?, hp_order),
    );
    o.put("unusable_index", extfrag_at("unusable_index", hp_order));
    o.put("extfrag_index", extfrag_at("extfrag_index", hp_order));
    if let Ok(pt) = fs::read_to_string("/proc/pagetypeinfo") {
        o.put("pageblocks", pagetype_section(&pt, "Number of blocks type"));
        o.put(
            "mixed_pageblocks",
            pagetype_section(&pt, "Number of mixed blocks"),
        );
    }
    Ok(o)
}

/// Anonymous private memory, unmapped on drop.
#[derive(Debug)]
pub struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain memory; the methods' borrows keep Rust accesses race free.
unsafe impl Send for AnonMap {}
// SAFETY: as above; &self methods only read (volatile) or call madvise.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// `len` bytes (a multiple of the page size) starting at a multiple of
    /// `align` (a power of two; 0 or PAGE: wherever the kernel puts it).
    pub fn new(len: usize, align: usize) -> R<Self> {
        let extra = if align > PAGE { align } else { 0 };
        // SAFETY: a fresh mapping chosen by the kernel; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + extra,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {len} bytes: {}",
                io::Error::last_os_error()
            ));
        }
        let mut ptr = p as usize;
        if extra > 0 {
            let aligned = (ptr + align - 1) & !(align - 1);
            // SAFETY: trimming the unaligned head and the tail of our own
            // fresh mapping.
            unsafe {
                if aligned > ptr {
                    libc::munmap(p, aligned - ptr);
                }
                let tail = ptr + len + extra - (aligned + len);
                if tail > 0 {
                    libc::munmap((aligned + len) as *mut libc::c_void, tail);
                }
            }
            ptr = aligned;
        }
        Ok(Self {
            ptr: ptr as *mut u8,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The address of the first byte.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// madvise(2) on `[off, off + len)`.
    pub fn advise(&self, off: usize, len: usize, advice: libc::c_int) -> R<()> {
        assert!(off + len <= self.len);
        // SAFETY: a range of our own mapping; DONTNEED only drops contents
        // that we never read back without writing first.
        let r = unsafe { libc::madvise(self.ptr.add(off).cast(), len, advice) };
        if r != 0 {
            return Err(format!("madvise({advice}): {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Locks the mapping in memory (mlock(2)): never reclaimed, still
    /// migratable by compaction.
    pub fn mlock(&self) -> R<()> {
        // SAFETY: our own mapping.
        let r = unsafe { libc::mlock(self.ptr.cast(), self.len) };
        if r != 0 {
            return Err(format!("mlock: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Sets every byte to `v` (allocating every page).
    pub fn fill(&mut self, v: u8) {
        // SAFETY: `len` writable bytes, borrowed exclusively.
        unsafe { std::ptr::write_bytes(self.ptr, v, self.len) }
    }

    /// Copies all of `src`, of the same length, here: a plain memcpy (the
    /// `vram` phase's baseline for GEM_MOVE).
    pub fn copy_from(&mut self, src: &AnonMap) {
        assert_eq!(self.len, src.len, "copy_from: lengths differ");
        // SAFETY: both are `len` bytes of live mappings, each owned by its
        // AnonMap; `&mut self` and `&src` are distinct AnonMaps (a `&mut`
        // cannot alias a `&`), so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr, self.ptr, self.len) }
    }

    /// Volatile write of the u64 at `off` (8-aligned).
    pub fn write_u64(&mut self, off: usize, v: u64) {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned.
        unsafe { self.ptr.add(off).cast::<u64>().write_volatile(v) }
    }

    /// Volatile read of the u64 at `off` (8-aligned).
    pub fn read_u64(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned.
        unsafe { self.ptr.add(off).cast::<u64>().read_volatile() }
    }

    /// Volatile read of the u32 at `off` (4-aligned).
    pub fn read_u32(&self, off: usize) -> u32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: in bounds and aligned.
        unsafe { self.ptr.add(off).cast::<u32>().read_volatile() }
    }

    /// FNV-1a 64 of `[off, off + len)`, as SOFTGPU_CMD_CHECKSUM computes
    /// it, read without making a reference (the GPU may have written it).
    pub fn fnv1a64(&self, off: usize, len: usize) -> u64 {
        assert!(off + len <= self.len);
        let mut h = softgpu::Fnv1a64::new();
        let mut buf = [0u8; 4096];
        let mut o = off;
        while o < off + len {
            let n = buf.len().min(off + len - o);
            // SAFETY: in bounds; copied out, no reference to the mapping
            // is made, and no job writes to it while we read (callers
            // wait for them).
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(o), buf.as_mut_ptr(), n) };
            h.update(&buf[..n]);
            o += n;
        }
        h.finish()
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() kept.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A tmpfs mounted by the benchmark, unmounted (lazily) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    pub dir: std::path::PathBuf,
}

/// Ends a record with the outcome of its measurement: `ok`, or `ok: false`
/// with the error, which is also reported as progress under `what`.
pub fn finish(rec: &mut Obj, what: &str, res: R<()>) {
    match res {
        Ok(()) => rec.put("ok", true),
        Err(e) => {
            crate::progress(&format!("{what}: FAILED: {e}"));
            rec.put("ok", false).put("error", e)
        }
    };
}

/// Creates (or truncates) `path`, open for reading and writing.
pub fn create_file(path: &Path) -> R<fs::File> {
    fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(format!("creating {}", path.display()))
}

impl Tmpfs {
    pub fn mount(dir: &Path, opts: &str) -> R<Self> {
        Self::mount_type(dir, "tmpfs", opts)
    }

    /// A mount of `fstype` (tmpfs, or gemfs, which takes tmpfs's options).
    pub fn mount_type(dir: &Path, fstype: &str, opts: &str) -> R<Self> {
        fs::create_dir_all(dir).ctx(format!("mkdir {}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let data = CString::new(opts).map_err(|e| e.to_string())?;
        let ty = CString::new(fstype).map_err(|e| e.to_string())?;
        // SAFETY: valid NUL-terminated strings for the call's duration.
        let r = unsafe {
            libc::mount(
                ty.as_ptr(),
                target.as_ptr(),
                ty.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(format!(
                "mount -t {fstype} -o {opts} {}: {}",
                dir.display(),
                io::Error::last_os_error()
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.dir.as_os_str().as_bytes()) {
            // SAFETY: a valid path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// fallocate(2) PUNCH_HOLE: frees `[off, off + len)` of a tmpfs file.
pub fn punch_hole(f: &fs::File, off: u64, len: u64) -> R<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open fd.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "fallocate(PUNCH_HOLE): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The settings that shape the results, for the `env` record.
pub fn environment() -> Obj {
    let mut o = Obj::new();
    o.put("kernel", read_opt("/proc/sys/kernel/osrelease"));
    o.put("mem_total_kb", meminfo_kb("MemTotal").ok());
    o.put(
        "nodes",
        softgpu::mm::online_nodes()
            .ok()
            .map(|n| n.into_iter().map(u64::from).collect::<Vec<_>>()),
    );
    o.put(
        "cpus",
        std::thread::available_parallelism().map(|n| n.get()).ok(),
    );
    o.put("hugepage_kb", hugepage().ok().map(|h| h.0));
    let thp = "/sys/kernel/mm/transparent_hugepage";
    o.put("thp_enabled", selected(&format!("{thp}/enabled")));
    o.put("thp_defrag", selected(&format!("{thp}/defrag")));
    o.put(
        "thp_shmem_enabled",
        selected(&format!("{thp}/shmem_enabled")),
    );
    for k in [
        "compaction_proactiveness",
        "compact_unevictable_allowed",
        "extfrag_threshold",
        "min_free_kbytes",
        "watermark_scale_factor",
        "swappiness",
        "zone_reclaim_mode",
    ] {
        o.put(k, read_opt(&format!("/proc/sys/vm/{k}")));
    }
    o.put(
        "swaps",
        read_opt("/proc/swaps").map(|s| s.lines().skip(1).collect::<Vec<_>>().join("; ")),
    );
    o.put(
        "extfrag_debugfs",
        Path::new("/sys/kernel/debug/extfrag/unusable_index").exists(),
    );
    o.put("pagetypeinfo", Path::new("/proc/pagetypeinfo").exists());
    o
}

/// A shared mapping of a file, unmapped on drop.
pub struct FileMap {
    pub ptr: *mut u8,
    pub len: usize,
}

impl FileMap {
    pub fn new(f: &fs::File, len: usize) -> R<Self> {
        // SAFETY: a fresh shared mapping of an open file; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { ptr: p.cast(), len })
    }

    pub fn read_u64(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned, mapped readable.
        unsafe { self.ptr.add(off).cast::<u64>().read_volatile() }
    }

    pub fn page_addrs(&self) -> Vec<usize> {
        (0..self.len)
            .step_by(PAGE)
            .map(|o| self.ptr as usize + o)
            .collect()
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDDY: &str = "\
Node 0, zone      DMA      1      0      0      1      2      1      1      0      1      1      3 
Node 0, zone    DMA32      5      4      3      2      1      0      0      0      0      2      1 
";

    #[test]
    fn buddyinfo_huge_blocks() {
        // order 9: DMA 1 + 3*2, DMA32 2 + 1*2
        assert_eq!(free_blocks_at_least(BUDDY, 9), 11);
        assert_eq!(free_blocks_at_least(BUDDY, 10), 4);
    }

    #[test]
    fn zone_lines_parse() {
        let z = zone_lines(BUDDY);
        assert_eq!(z[1].0, "node0_DMA32");
        assert_eq!(z[1].1.len(), 11);
    }

    #[test]
    fn pagetypeinfo_blocks() {
        let s = "\
Page block order: 9
Pages per block:  512

Free pages count per migrate type at order       0      1
Node    0, zone      DMA, type    Unmovable      0      0

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate 
Node 0, zone      DMA            1            7            0            0            0 
Node 0, zone    DMA32           10          900            2            0            0 

Number of mixed blocks    Unmovable      Movable  Reclaimable   HighAtomic      Isolate 
Node 0, zone      DMA            0            1            0            0            0 
";
        let o = pagetype_section(s, "Number of blocks type").unwrap();
        assert_eq!(o["Unmovable"], 11);
        assert_eq!(o["Movable"], 907);
        let m = pagetype_section(s, "Number of mixed blocks").unwrap();
        assert_eq!(m["Movable"], 1);
        assert!(pagetype_section("nothing", "Number of mixed blocks").is_none());
    }

    #[test]
    fn zoneinfo_pcp_lists() {
        let z = "\
Node 0, zone    DMA32
  pages free     12345
  pagesets
    cpu: 0
              count: 300
              high:  1000
              batch: 63
  vm stats threshold: 24
    cpu: 1
              count: 10
              high:  252
              batch: 63
  node_unreclaimable:  0
";
        let l = pcp_lists(z);
        assert_eq!(l, [(300, 63), (10, 63)]);
        assert!(!pcp_drained(&l));
        assert!(pcp_drained(&[(252, 63), (0, 63)]));
        assert!(pcp_free_kb().is_ok());
    }

    #[test]
    fn counters_and_deltas() {
        let a = parse_counters("compact_stall 1\npgmigrate_success 5\nnr_free_pages 9\n");
        let b = parse_counters("compact_stall 3\npgmigrate_success 5\nnr_free_pages 1\n");
        let d = vmstat_delta(&a, &b);
        assert_eq!(
            crate::json::line(&d),
            r#"{"compact_stall":2,"pgmigrate_success":0}"#
        );
        let m = parse_counters("MemTotal:       4049592 kB\nHugePages_Total:       0\n");
        assert_eq!(m["MemTotal"], 4049592);
        assert_eq!(m["HugePages_Total"], 0);
    }

    #[test]
    fn snapshot_reads_this_machine() {
        let (kb, order) = hugepage().unwrap();
        assert_eq!(kb * 1024, (PAGE as u64) << order);
        let s = snapshot(order).unwrap();
        assert!(s["MemFree_kb"].as_u64().is_some_and(|v| v > 0));
        assert!(s.get("free_huge_blocks").is_some());
        let e = environment();
        assert!(e["mem_total_kb"].is_u64());
        println!("{}\n{}", crate::json::line(&s), crate::json::line(&e));
    }

    #[test]
    fn anon_map_aligns() {
        let mut m = AnonMap::new(4 * PAGE, 2 << 20).unwrap();
        assert_eq!(m.ptr as usize % (2 << 20), 0);
        m.fill(7);
        assert_eq!(m.read_u64(8), 0x0707_0707_0707_0707);
        m.write_u64(0, 3);
        assert_eq!(m.read_u64(0), 3);
    }
}

/// Pins the calling process to CPU `cpu` (`sched_setaffinity()`).
pub fn pin_to_cpu(cpu: usize) -> R<()> {
    // SAFETY: a zeroed `cpu_set_t` is the empty set; `CPU_SET` writes one
    // bit of it, `cpu` checked against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(format!("--cpu {cpu}: no such CPU"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
