//! Memory-management probes for the tests: where a page is (pagemap PFN,
//! NUMA node), moving it (move_pages(2)), and the kernel's counters
//! (/proc/vmstat, /proc/meminfo).

use std::collections::HashMap;
use std::ffi::c_void;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;

/// `MPOL_MF_MOVE` (<linux/mempolicy.h>): move pages mapped only by us.
pub const MPOL_MF_MOVE: libc::c_int = 1 << 1;

/// Page size the probes work in.
pub const PAGE: usize = 4096;

/// A [`MoveOutcome::status`] entry the kernel left alone: it returns the
/// number of pages it failed to migrate instead of per-page errors when
/// the migration of a batch fails (e.g. a page with extra references).
pub const NOT_MOVED: i32 = i32::MIN;

/// The result of [`move_pages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOutcome {
    /// The syscall's return value: pages it could not migrate (0 if all
    /// were migrated or got a per-page status).
    pub not_migrated: usize,
    /// Per page: the node it is now on, a negative errno, or [`NOT_MOVED`].
    pub status: Vec<i32>,
}

impl MoveOutcome {
    /// Whether page `i` is now on `node`.
    pub fn moved(&self, i: usize, node: i32) -> bool {
        self.status[i] == node
    }

    /// Indices of the pages that are not on their target in `nodes`.
    pub fn failed(&self, nodes: &[i32]) -> Vec<usize> {
        (0..self.status.len())
            .filter(|&i| self.status[i] != nodes[i])
            .collect()
    }
}

fn sys_move_pages(addrs: &[usize], nodes: Option<&[i32]>, status: &mut [i32]) -> io::Result<usize> {
    assert_eq!(addrs.len(), status.len());
    if let Some(n) = nodes {
        assert_eq!(n.len(), addrs.len());
    }
    let pages: Vec<*const c_void> = addrs.iter().map(|&a| a as *const c_void).collect();
    let nodes_ptr = nodes.map_or(std::ptr::null(), |n| n.as_ptr());
    // SAFETY: pages, nodes (or NULL) and status each hold addrs.len()
    // entries; the kernel only reads the first two and writes status. The
    // page addresses themselves are only looked up, never dereferenced by
    // us, and migration preserves their contents.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::pid_t,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            nodes_ptr,
            status.as_mut_ptr(),
            MPOL_MF_MOVE,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// move_pages(2) for this process: moves the page at `addrs[i]` to node
/// `nodes[i]`, with `MPOL_MF_MOVE`. Errors only if the call itself fails.
pub fn move_pages(addrs: &[usize], nodes: &[i32]) -> io::Result<MoveOutcome> {
    let mut status = vec![NOT_MOVED; addrs.len()];
    let not_migrated = sys_move_pages(addrs, Some(nodes), &mut status)?;
    Ok(MoveOutcome {
        not_migrated,
        status,
    })
}

/// [`move_pages`] with every page going to `node`.
pub fn move_pages_to(addrs: &[usize], node: i32) -> io::Result<MoveOutcome> {
    move_pages(addrs, &vec![node; addrs.len()])
}

/// The node each page is on (move_pages with no target), or a negative
/// errno per page (-ENOENT: not present).
pub fn page_nodes(addrs: &[usize]) -> io::Result<Vec<i32>> {
    let mut status = vec![NOT_MOVED; addrs.len()];
    sys_move_pages(addrs, None, &mut status)?;
    Ok(status)
}

/// `MPOL_DEFAULT` and `MPOL_BIND` (<linux/mempolicy.h>).
const MPOL_DEFAULT: libc::c_int = 0;
const MPOL_BIND: libc::c_int = 2;

/// A node mask with `node` alone in it, as mbind(2) and set_mempolicy(2)
/// take it: the mask and its size in bits.
fn node_mask(node: u32) -> io::Result<(libc::c_ulong, libc::c_ulong)> {
    if node >= libc::c_ulong::BITS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok((1 << node, libc::c_ulong::BITS.into()))
}

/// mbind(2) `[addr, addr + len)` of this process to `node` (`MPOL_BIND`):
/// pages faulted in there later come from that node only.
pub fn bind_range_to_node(addr: usize, len: usize, node: u32) -> io::Result<()> {
    let (mask, bits) = node_mask(node)?;
    // SAFETY: mbind only reads `mask` (one word, `bits` bits) and changes
    // the policy of the caller's own range; no memory of ours is touched.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_BIND,
            &mask as *const libc::c_ulong,
            bits,
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The calling thread allocates from one node only (set_mempolicy(2)
/// `MPOL_BIND`), for the life of the value; then by the default policy.
/// Shared memory faulted in meanwhile (tmpfs, gemfs) follows it too: shmem
/// falls back to the task's policy where the file has none.
pub struct ThreadOnNode(());

impl ThreadOnNode {
    pub fn bind(node: u32) -> io::Result<Self> {
        let (mask, bits) = node_mask(node)?;
        // SAFETY: set_mempolicy only reads `mask` (one word, `bits` bits).
        let r = unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                MPOL_BIND,
                &mask as *const libc::c_ulong,
                bits,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(()))
    }
}

impl Drop for ThreadOnNode {
    fn drop(&mut self) {
        // SAFETY: MPOL_DEFAULT takes no mask.
        unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                MPOL_DEFAULT,
                core::ptr::null::<libc::c_ulong>(),
                0 as libc::c_ulong,
            )
        };
    }
}

/// One value of a node's meminfo (/sys/devices/system/node/nodeN/meminfo,
/// "Node N MemFree:  123 kB"), in KiB.
pub fn node_meminfo_kb(node: u32, name: &str) -> io::Result<u64> {
    let s = fs::read_to_string(format!("/sys/devices/system/node/node{node}/meminfo"))?;
    s.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.split_whitespace().nth(2)? == name)
                .then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {name} in node {node}'s meminfo"),
            )
        })
}

/// The online NUMA nodes, from /sys/devices/system/node/online ("0-1").
pub fn online_nodes() -> io::Result<Vec<u32>> {
    let s = fs::read_to_string("/sys/devices/system/node/online")?;
    let mut nodes = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("node list {s:?}"));
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        nodes.extend(a..=b);
    }
    Ok(nodes)
}

/// /proc/self/pagemap, for PFN lookups (PFNs are visible to root only).
#[derive(Debug)]
pub struct Pagemap(File);

impl Pagemap {
    pub fn open() -> io::Result<Self> {
        Ok(Self(File::open("/proc/self/pagemap")?))
    }

    /// The raw 64-bit pagemap entry of the page holding `addr`.
    pub fn entry(&self, addr: usize) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, (addr / PAGE * 8) as u64)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// The PFN of the page mapped at `addr`: `None` if no page is present
    /// there (or the PFN is hidden, as it is from non-root).
    pub fn pfn(&self, addr: usize) -> io::Result<Option<u64>> {
        let e = self.entry(addr)?;
        let present = e & (1 << 63) != 0;
        let pfn = e & ((1 << 55) - 1);
        Ok((present && pfn != 0).then_some(pfn))
    }

    /// [`Pagemap::pfn`] of each of the `pages` pages from `addr` (page
    /// aligned), read in one go.
    pub fn range_pfns(&self, addr: usize, pages: usize) -> io::Result<Vec<Option<u64>>> {
        let mut b = vec![0u8; pages * 8];
        self.0.read_exact_at(&mut b, (addr / PAGE * 8) as u64)?;
        Ok(b.chunks_exact(8)
            .map(|e| {
                let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
                let pfn = e & ((1 << 55) - 1);
                (e & (1 << 63) != 0 && pfn != 0).then_some(pfn)
            })
            .collect())
    }

    /// [`Pagemap::pfn`] of each address.
    pub fn pfns(&self, addrs: &[usize]) -> io::Result<Vec<Option<u64>>> {
        addrs.iter().map(|&a| self.pfn(a)).collect()
    }
}

/// The PFN of the page mapped at `addr` in this process (see
/// [`Pagemap::pfn`]).
pub fn pagemap_pfn(addr: usize) -> io::Result<Option<u64>> {
    Pagemap::open()?.pfn(addr)
}

/// /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h).
pub const KPF_DIRTY: u32 = 4;
pub const KPF_COMPOUND_HEAD: u32 = 15;
pub const KPF_COMPOUND_TAIL: u32 = 16;
/// Any transparent huge page (of any order), head or tail page.
pub const KPF_THP: u32 = 22;

/// The /proc/kpageflags entry of each PFN (readable by root only).
pub fn kpageflags(pfns: &[u64]) -> io::Result<Vec<u64>> {
    let f = File::open("/proc/kpageflags")?;
    pfns.iter()
        .map(|&pfn| {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, pfn * 8)?;
            Ok(u64::from_ne_bytes(b))
        })
        .collect()
}

/// Memory hot(un)plug blocks, /sys/devices/system/memory/memory<N>.
pub const MEMORY_SYSFS: &str = "/sys/devices/system/memory";

/// The size of a memory block in bytes (`block_size_bytes`, hex).
pub fn memory_block_size() -> io::Result<u64> {
    let s = fs::read_to_string(format!("{MEMORY_SYSFS}/block_size_bytes"))?;
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("block size {s:?}")))
}

/// The memory blocks of NUMA node `node`, by number (block `n` starts at
/// `n * memory_block_size()`), in ascending order.
pub fn node_memory_blocks(node: u32) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = fs::read_dir(format!("/sys/devices/system/node/node{node}"))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("memory")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// One attribute of memory block `id` (`state`, `valid_zones`, ...),
/// trimmed.
pub fn memory_block_attr(id: u64, attr: &str) -> io::Result<String> {
    Ok(
        fs::read_to_string(format!("{MEMORY_SYSFS}/memory{id}/{attr}"))?
            .trim()
            .to_string(),
    )
}

/// All of /proc/vmstat.
pub fn vmstat() -> io::Result<HashMap<String, u64>> {
    parse_counters(&fs::read_to_string("/proc/vmstat")?)
}

/// One /proc/vmstat counter; `NotFound` if the kernel has no such counter.
pub fn vmstat_counter(name: &str) -> io::Result<u64> {
    vmstat()?.remove(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {name} in /proc/vmstat"),
        )
    })
}

/// One /proc/meminfo value, in KiB (`MemFree`, `Shmem`, ...).
pub fn meminfo_kb(name: &str) -> io::Result<u64> {
    let s = fs::read_to_string("/proc/meminfo")?;
    s.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {name} in meminfo")))
}

/// Which pages of `[addr, addr + len)` (page aligned) are in memory, as
/// mincore(2) sees them: for a file mapping, in the page cache or the swap
/// cache, whether the CPU maps them or not.
pub fn mincore(addr: usize, len: usize) -> io::Result<Vec<bool>> {
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: `vec` has one byte per page of the range, as mincore writes.
    let r = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.into_iter().map(|b| b & 1 != 0).collect())
}

/// The value in KiB of `field` ("Swap", "Rss", ...) in /proc/self/smaps for
/// the mapping that starts at `addr`.
pub fn smaps_kb(addr: usize, field: &str) -> io::Result<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps")?;
    let start = format!("{addr:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {field} in the smaps entry at {addr:#x}"),
        )
    };
    lines.next().ok_or_else(not_found)?;
    // The entry's fields, up to the next mapping's header line (which has
    // no "Name:" form: it starts with an address range).
    lines
        .take_while(|l| l.split_once(':').is_some_and(|(k, _)| !k.contains('-')))
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == field).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .ok_or_else(not_found)
}

fn parse_counters(s: &str) -> io::Result<HashMap<String, u64>> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next().and_then(|v| v.parse().ok())) {
                (Some(k), Some(v)) => Ok((k.to_string(), v)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("vmstat line {l:?}"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse() {
        let m = parse_counters("nr_free_pages 12\npgmigrate_success 3\n").unwrap();
        assert_eq!(m["pgmigrate_success"], 3);
        assert!(parse_counters("oops\n").is_err());
    }

    #[test]
    fn probes_work_on_the_host() {
        assert!(vmstat_counter("nr_free_pages").unwrap() > 0);
        assert!(meminfo_kb("MemTotal").unwrap() > 0);
        assert!(!online_nodes().unwrap().is_empty());
        let v = vec![1u8; 3 * PAGE];
        let addr = v.as_ptr() as usize;
        let addrs = [addr, addr + PAGE];
        let nodes = page_nodes(&addrs).unwrap();
        assert!(nodes.iter().all(|&n| n >= 0), "{nodes:?}");
        // Moving to the node the page is on already is a no-op success.
        let out = move_pages(&addrs, &nodes).unwrap();
        assert_eq!(out.not_migrated, 0);
        assert_eq!(out.status, nodes);
        let pm = Pagemap::open().unwrap();
        pm.entry(addr).unwrap();
        let start = addr.next_multiple_of(PAGE);
        assert_eq!(mincore(start, PAGE).unwrap(), [true]);
    }

    #[test]
    fn smaps_fields_of_a_mapping() {
        // SAFETY: a fresh anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: p maps 4 pages; touch two.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, 2 * PAGE) };
        assert_eq!(smaps_kb(p as usize, "Rss").unwrap(), 8);
        assert_eq!(smaps_kb(p as usize, "Swap").unwrap(), 0);
        assert!(smaps_kb(p as usize, "NoSuchField").is_err());
        assert_eq!(
            mincore(p as usize, 4 * PAGE).unwrap(),
            [true, true, false, false]
        );
        // SAFETY: unmapping what we mapped.
        assert_eq!(unsafe { libc::munmap(p, 4 * PAGE) }, 0);
    }
}
