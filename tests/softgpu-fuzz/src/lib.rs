//! A structured fuzzer of softgpu's uAPI, in the manner of syzkaller: it
//! generates sequences of softgpu and DRM core ioctls (create, mmap, info,
//! madvise, bind, unbind, userptr, exec with random command buffers over
//! random addresses, wait, PRIME export and import, close) mixed with
//! `munmap`, `mprotect`, `madvise`, `move_pages`, `fork`, compaction and
//! file closes, in several processes of several threads each.
//!
//! Everything is drawn from one seed, printed first, so that a run can be
//! repeated with it. Each thread works on DRM files of its own, so the
//! answers it can predict are checked exactly (a closed handle is `ENOENT`,
//! a job over an address nothing is bound to faults there, a BO filled and
//! checksummed by the GPU reads back what was filled, whatever migration
//! and the shrinker did in between); the rest is left to the kernel's
//! detectors (lockdep, KASAN, kmemleak), which fail the run on a splat.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use softgpu::*;

const PAGE: u64 = 4096;
/// Where a worker binds things: a 64 MiB window, so that bindings collide.
const WINDOW: u64 = 0x10_0000_0000;
const WINDOW_PAGES: u64 = 16384;
/// A one-page BO for checksums, never touched by random operations.
const RES_VA: u64 = 0x40_0000_0000;
/// Never bound in any worker's VM: a job touching it must fault there.
const NEVER_VA: u64 = 0x70_0000_0000;
/// The userptr arena of a worker: anonymous memory that only the GPU and
/// the fuzzer's mm calls use.
const ARENA: usize = 4 << 20;
/// Most BO memory a worker keeps alive at once.
const MAX_LIVE_BYTES: u64 = 48 << 20;
/// How long a worker waits for one of its jobs.
const WAIT_NS: i64 = 120_000_000_000;

/// splitmix64: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of worker `index` of a run with `seed`.
pub fn worker_seed(seed: u64, index: u64) -> u64 {
    Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
}

/// What workers saw: calls made, and how often each call returned each
/// errno (0 for success); broken invariants.
#[derive(Default, Debug)]
pub struct Tally {
    pub calls: u64,
    /// Bytes of BO contents checked against what was written.
    pub bytes_checked: u64,
    pub outcomes: BTreeMap<(String, i32), u64>,
    pub violations: Vec<String>,
}

impl Tally {
    fn record<T>(&mut self, op: &str, r: &io::Result<T>) {
        let errno = match r {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        };
        self.calls += 1;
        *self.outcomes.entry((op.to_string(), errno)).or_default() += 1;
    }

    fn violation(&mut self, what: String) {
        // The first few are enough to reproduce; keep the report short.
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.bytes_checked += other.bytes_checked;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for v in other.violations {
            self.violation(v);
        }
    }

    /// One line per fact, for a pipe between processes.
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "bytes {}", self.bytes_checked);
        for ((op, errno), n) in &self.outcomes {
            let _ = writeln!(s, "outcome {op} {errno} {n}");
        }
        for v in &self.violations {
            let _ = writeln!(s, "violation {}", v.replace('\n', " "));
        }
        s
    }

    pub fn from_lines(text: &str) -> Self {
        let mut t = Tally::default();
        for line in text.lines() {
            let mut w = line.splitn(2, ' ');
            match (w.next(), w.next()) {
                (Some("outcome"), Some(rest)) => {
                    let f: Vec<&str> = rest.split(' ').collect();
                    if let [op, errno, n] = f[..] {
                        if let (Ok(e), Ok(n)) = (errno.parse(), n.parse::<u64>()) {
                            t.calls += n;
                            *t.outcomes.entry((op.to_string(), e)).or_default() += n;
                            continue;
                        }
                    }
                    t.violation(format!("unreadable report line: {line}"));
                }
                (Some("violation"), Some(rest)) => t.violation(rest.to_string()),
                (Some("bytes"), Some(n)) if n.parse::<u64>().is_ok() => {
                    t.bytes_checked += n.parse::<u64>().unwrap()
                }
                _ => t.violation(format!("unreadable report line: {line}")),
            }
        }
        t
    }
}

struct Bo {
    handle: u32,
    size: u64,
    /// Never madvised DONTNEED (so never purged), never shared through
    /// PRIME: its contents are only what this worker put there.
    private: bool,
}

struct Binding {
    va: u64,
    size: u64,
    /// The BO bound whole and writable at `va`, if this is such a binding.
    whole_bo: Option<u32>,
}

/// One fuzzing thread: a DRM file of its own, its objects and bindings,
/// its mappings and its userptr arena.
struct Worker {
    dev: Device,
    rng: Rng,
    tally: Tally,
    bos: Vec<Bo>,
    binds: Vec<Binding>,
    /// CPU mappings, with the handle they were made of and whether that
    /// BO may be purged (then a CPU access could get SIGBUS).
    maps: Vec<(Mapping, u32, bool)>,
    fds: Vec<OwnedFd>,
    seqnos: Vec<u64>,
    arena: *mut u8,
    res_handle: u32,
    res: Mapping,
    live_bytes: u64,
    compact: bool,
    last_compact: Instant,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: unmapping the arena `Worker::new` mapped.
        unsafe { libc::munmap(self.arena.cast(), ARENA) };
    }
}

fn page_round(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

impl Worker {
    fn new(seed: u64, compact: bool) -> io::Result<Self> {
        let dev = Device::open()?;
        let res_handle = dev.create_bo(PAGE, 0)?;
        dev.bind(res_handle, RES_VA, 0, PAGE, 0)?;
        let res = dev.mmap_bo(res_handle, PAGE as usize)?;
        // SAFETY: a fresh anonymous mapping, checked below.
        let arena = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if arena == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            dev,
            rng: Rng::new(seed),
            tally: Tally::default(),
            bos: Vec::new(),
            binds: Vec::new(),
            maps: Vec::new(),
            fds: Vec::new(),
            seqnos: Vec::new(),
            arena: arena.cast(),
            res_handle,
            res,
            live_bytes: 0,
            compact,
            last_compact: Instant::now(),
        })
    }

    /// A size for a BO or a binding: mostly a few pages, sometimes odd.
    fn size(&mut self) -> u64 {
        match self.rng.below(20) {
            0 => 0,
            1 => self.rng.below(PAGE * 4) + 1,
            2 => 1 << (20 + self.rng.below(30)),
            3 => self.rng.next_u64(),
            4 => 2 << 20,
            _ => PAGE * (1 + self.rng.below(32)),
        }
    }

    /// A GPU address: mostly in the window, sometimes anywhere.
    fn va(&mut self) -> u64 {
        match self.rng.below(16) {
            0 => self.rng.next_u64(),
            1 => WINDOW + self.rng.below(WINDOW_PAGES * PAGE),
            _ => WINDOW + PAGE * self.rng.below(WINDOW_PAGES),
        }
    }

    /// A GPU address for commands: also the never-bound page.
    fn cmd_va(&mut self) -> u64 {
        if self.rng.chance(60) {
            NEVER_VA + PAGE * self.rng.below(2)
        } else {
            self.va()
        }
    }

    /// A handle: mostly one of ours, sometimes one that is not. Never the
    /// result BO's, which the checks need.
    fn handle(&mut self) -> u32 {
        let h = if !self.bos.is_empty() && !self.rng.chance(100) {
            let i = self.rng.below(self.bos.len() as u64) as usize;
            self.bos[i].handle
        } else {
            let any = self.rng.next_u64() as u32;
            self.rng.pick(&[0, 1, 2, 3, u32::MAX, any])
        };
        if h == self.res_handle {
            0
        } else {
            h
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=11 => self.create(),
            12..=17 => self.close(),
            18..=20 => self.info(),
            21..=25 => self.map(),
            26..=28 => self.unmap(),
            29..=33 => self.touch(),
            34..=44 => self.bind(),
            45..=50 => self.unbind(),
            51..=55 => self.userptr(),
            56..=68 => self.exec(),
            69..=72 => self.wait(),
            73..=75 => self.madvise(),
            76..=78 => self.prime(),
            79..=83 => self.arena_mm(),
            84..=87 => self.move_pages(),
            88..=91 => self.verify(),
            92..=94 => self.unbound_faults(),
            95..=96 => self.raw_ioctl(),
            97 => self.fork(),
            98 => self.reopen_fds(),
            _ => self.compact(),
        }
    }

    fn create(&mut self) {
        let size = self.size();
        let flags = match self.rng.below(10) {
            0 => self.rng.next_u64() as u32,
            1..=3 => SOFTGPU_BO_PINNED,
            _ => 0,
        };
        if size > MAX_LIVE_BYTES || self.live_bytes + size > MAX_LIVE_BYTES {
            return;
        }
        let r = self.dev.create_bo(size, flags);
        self.tally.record("GEM_CREATE", &r);
        if let Ok(handle) = r {
            let size = page_round(size);
            self.live_bytes += size;
            self.bos.push(Bo {
                handle,
                size,
                private: true,
            });
        }
    }

    fn close(&mut self) {
        let h = self.handle();
        let r = self.dev.close_bo(h);
        self.tally.record("GEM_CLOSE", &r);
        if r.is_ok() {
            if let Some(i) = self.bos.iter().position(|b| b.handle == h) {
                let bo = self.bos.swap_remove(i);
                self.live_bytes -= bo.size;
            }
            // The handle is gone: nothing may find it now.
            match self.dev.info(h) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => self.tally.violation(format!(
                    "GEM_INFO of handle {h} right after closing it: {other:?}, expected ENOENT"
                )),
            }
            // Bindings of it are gone with it.
            self.binds.retain(|b| b.whole_bo != Some(h));
        }
    }

    fn info(&mut self) {
        let h = self.handle();
        let r = self.dev.info(h);
        self.tally.record("GEM_INFO", &r);
        if let (Ok(info), Some(bo)) = (&r, self.bos.iter().find(|b| b.handle == h)) {
            if info.size != bo.size {
                let want = bo.size;
                self.tally.violation(format!(
                    "GEM_INFO of {h}: size {}, created as {want}",
                    info.size
                ));
            }
        }
    }

    fn map(&mut self) {
        if self.maps.len() >= 32 {
            return;
        }
        let h = self.handle();
        let size = match self.bos.iter().find(|b| b.handle == h) {
            Some(b) if !self.rng.chance(100) => b.size,
            _ => self.size(),
        };
        let size = size.min(64 << 20) as usize;
        let may_purge = !self.bos.iter().any(|b| b.handle == h && b.private);
        let r = self.dev.mmap_bo(h, size);
        self.tally.record("mmap", &r);
        if let Ok(m) = r {
            self.maps.push((m, h, may_purge));
        }
    }

    fn unmap(&mut self) {
        if !self.maps.is_empty() {
            let i = self.rng.below(self.maps.len() as u64) as usize;
            self.maps.swap_remove(i);
            self.tally.record("munmap", &Ok(()));
        }
    }

    fn touch(&mut self) {
        if self.maps.is_empty() {
            return;
        }
        let i = self.rng.below(self.maps.len() as u64) as usize;
        let v = self.rng.next_u64() as u8;
        let (m, _, may_purge) = &mut self.maps[i];
        if m.is_empty() || *may_purge {
            return;
        }
        // A BO mapped beyond its end gets SIGBUS there: touch only the
        // first page, which every successful mapping of a BO has.
        let len = m.len().min(PAGE as usize);
        m.as_mut_slice()[..len].fill(v);
        self.tally.record("touch", &Ok(()));
    }

    fn bind(&mut self) {
        let h = self.handle();
        let bo_size = self.bos.iter().find(|b| b.handle == h).map(|b| b.size);
        let va = self.va();
        let (offset, size, whole) = match bo_size {
            Some(s) if self.rng.chance(600) => (0, s, true),
            Some(s) => {
                let off = PAGE * self.rng.below(s / PAGE + 1);
                (off, self.size().min(s + PAGE), false)
            }
            None => (self.size(), self.size(), false),
        };
        let flags = match self.rng.below(8) {
            0 => SOFTGPU_BIND_READONLY,
            1 => self.rng.next_u64() as u32,
            _ => 0,
        };
        if reserved(va, size) {
            return;
        }
        let r = self.dev.bind(h, va, offset, size, flags);
        self.tally.record("VM_BIND", &r);
        if r.is_ok() {
            self.binds.push(Binding {
                va,
                size,
                whole_bo: (whole && flags == 0).then_some(h),
            });
        }
    }

    fn unbind(&mut self) {
        let (va, size) = if !self.binds.is_empty() && !self.rng.chance(200) {
            let i = self.rng.below(self.binds.len() as u64) as usize;
            (self.binds[i].va, self.binds[i].size)
        } else {
            (self.va(), self.size())
        };
        if reserved(va, size) {
            return;
        }
        let r = self.dev.unbind(va, size);
        self.tally.record("VM_UNBIND", &r);
        if r.is_ok() {
            self.binds.retain(|b| !overlaps(b.va, b.size, va, size));
        }
    }

    fn userptr(&mut self) {
        let (addr, size) = match self.rng.below(10) {
            // Outside the arena: only addresses nothing of this process is
            // at, so that the GPU can never write into the fuzzer itself.
            0 => (0xffff_8000_0000_0000 + PAGE * self.rng.below(16), PAGE),
            1 => (self.arena as u64 + 1, PAGE),
            2 if self.rng.chance(500) => (self.arena as u64, ARENA as u64 + PAGE),
            2 => (0, PAGE),
            _ => {
                let pages = (ARENA as u64) / PAGE;
                let first = self.rng.below(pages);
                let n = 1 + self.rng.below(pages - first);
                (self.arena as u64 + first * PAGE, n * PAGE)
            }
        };
        let va = self.va();
        if reserved(va, size) {
            return;
        }
        let flags = match self.rng.below(8) {
            0 => SOFTGPU_USERPTR_READONLY,
            1 => SOFTGPU_USERPTR_PINNED,
            2 => self.rng.next_u64() as u32,
            _ => 0,
        };
        // SAFETY: `[addr, addr + size)` is inside the arena, which only the
        // GPU and the fuzzer's mm calls use and which outlives the DRM
        // file, or an address no mapping of this process can have.
        let r = unsafe { self.dev.userptr(addr, size, va, flags) };
        self.tally.record("USERPTR", &r);
        if r.is_ok() {
            self.binds.push(Binding {
                va,
                size,
                whole_bo: None,
            });
        }
    }

    fn cmd(&mut self) -> Cmd {
        let dst = self.cmd_va();
        let src = self.cmd_va();
        let size = match self.rng.below(10) {
            0 => self.rng.next_u64(),
            1 => PAGE * self.rng.below(1024),
            _ => 4 * self.rng.below(4096),
        };
        match self.rng.below(12) {
            0..=2 => Cmd::fill(dst & !3, size & !3, self.rng.next_u64() as u32),
            3..=4 => Cmd::copy(dst, src, size),
            5..=6 => {
                let times = if self.rng.chance(20) {
                    1 << 20
                } else {
                    self.rng.below(64)
                };
                Cmd::atomic_add(dst & !7, self.rng.next_u64(), times)
            }
            7..=8 => Cmd::checksum(dst & !7, src, size),
            9 => Cmd::busy(self.rng.below(2000)),
            _ => Cmd {
                op: self.rng.below(8) as u32,
                flags: {
                    let any = self.rng.next_u64() as u32;
                    self.rng.pick(&[0, 1, any])
                },
                dst,
                src,
                size,
                value: self.rng.next_u64(),
            },
        }
    }

    fn exec(&mut self) {
        let n = if self.rng.chance(10) {
            0
        } else {
            1 + self.rng.below(8)
        };
        let cmds: Vec<Cmd> = (0..n).map(|_| self.cmd()).collect();
        let flags = match self.rng.below(6) {
            0 => SOFTGPU_EXEC_FENCE_OUT,
            1 => self.rng.next_u64() as u32,
            _ => 0,
        };
        let r = self.dev.exec(&cmds, flags);
        self.tally.record("EXEC", &r);
        if let Ok((seqno, fence)) = r {
            self.seqnos.push(seqno);
            if self.seqnos.len() > 64 {
                self.seqnos.remove(0);
            }
            if let Some(f) = fence {
                if self.fds.len() < 32 {
                    self.fds.push(f);
                }
            }
        }
    }

    fn wait(&mut self) {
        let seqno = match self.seqnos.last() {
            Some(&s) if !self.rng.chance(200) => s,
            _ => self.rng.next_u64(),
        };
        let timeout = self.rng.pick(&[0, 1_000_000, WAIT_NS, -1]);
        let r = self.dev.wait(seqno, timeout);
        self.tally.record("WAIT", &r);
    }

    fn madvise(&mut self) {
        let h = self.handle();
        let any = self.rng.next_u64() as u32;
        let madv = self
            .rng
            .pick(&[SOFTGPU_MADV_WILLNEED, SOFTGPU_MADV_DONTNEED, any]);
        let r = self.dev.madvise(h, madv);
        self.tally.record("GEM_MADVISE", &r);
        if r.is_ok() && madv == SOFTGPU_MADV_DONTNEED {
            // The shrinker may purge it from now on.
            if let Some(b) = self.bos.iter_mut().find(|b| b.handle == h) {
                b.private = false;
            }
            for (_, mh, may_purge) in self.maps.iter_mut() {
                *may_purge |= *mh == h;
            }
        }
    }

    fn prime(&mut self) {
        let h = self.handle();
        let r = self.dev.prime_export(h);
        self.tally.record("PRIME_HANDLE_TO_FD", &r);
        let Ok(fd) = r else { return };
        if let Some(b) = self.bos.iter_mut().find(|b| b.handle == h) {
            b.private = false;
        }
        // Import into this very file: the same handle comes back.
        let r = self.dev.prime_import(&fd);
        self.tally.record("PRIME_FD_TO_HANDLE", &r);
        match r {
            Ok(back) if back == h => {}
            other => self.tally.violation(format!(
                "PRIME import of handle {h}'s own export: {other:?}, expected {h}"
            )),
        }
        if self.fds.len() < 32 {
            self.fds.push(fd);
        }
    }

    fn arena_mm(&mut self) {
        let pages = ARENA as u64 / PAGE;
        let first = self.rng.below(pages);
        let n = 1 + self.rng.below((pages - first).min(64));
        // SAFETY: a page range inside the arena, which only the GPU and
        // these calls use.
        let (addr, len) = unsafe { (self.arena.add((first * PAGE) as usize), (n * PAGE) as usize) };
        let (what, rc) = match self.rng.below(6) {
            // SAFETY: mprotect() of the arena range above, which holds no
            // Rust object: only the GPU and these calls use it.
            0 => ("mprotect", unsafe {
                libc::mprotect(
                    addr.cast(),
                    len,
                    self.rng.pick(&[libc::PROT_READ, libc::PROT_NONE]),
                )
            }),
            // SAFETY: as above.
            1 | 2 => ("mprotect", unsafe {
                libc::mprotect(addr.cast(), len, libc::PROT_READ | libc::PROT_WRITE)
            }),
            // SAFETY: madvise() of the same range: dropping or paging out
            // its pages loses nothing any Rust code reads.
            3 => ("madvise", unsafe {
                libc::madvise(
                    addr.cast(),
                    len,
                    self.rng
                        .pick(&[libc::MADV_DONTNEED, libc::MADV_PAGEOUT, libc::MADV_HUGEPAGE]),
                )
            }),
            4 => {
                // munmap and map again in place: a new VMA, new pages.
                // SAFETY: MAP_FIXED over the arena's own range.
                let p = unsafe {
                    libc::mmap(
                        addr.cast(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                ("mmap_fixed", if p == libc::MAP_FAILED { -1 } else { 0 })
            }
            _ => {
                // A CPU write, on a page made writable first.
                // SAFETY: a page of the arena.
                let rc = unsafe {
                    libc::mprotect(
                        addr.cast(),
                        PAGE as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                };
                if rc == 0 {
                    // SAFETY: the page was just made writable.
                    unsafe { core::ptr::write_volatile(addr, self.rng.next_u64() as u8) };
                }
                ("arena_touch", rc)
            }
        };
        let r = if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        self.tally.record(what, &r);
    }

    fn move_pages(&mut self) {
        let mut addrs: Vec<usize> = Vec::new();
        if !self.maps.is_empty() {
            let i = self.rng.below(self.maps.len() as u64) as usize;
            addrs.push(self.maps[i].0.addr());
        }
        for _ in 0..4 {
            let p = self.rng.below(ARENA as u64 / PAGE) as usize;
            addrs.push(self.arena as usize + p * PAGE as usize);
        }
        let node = self.rng.below(2) as i32;
        let r = softgpu::mm::move_pages_to(&addrs, node);
        self.tally.record("move_pages", &r);
    }

    /// A private BO bound whole and writable: fill it on the GPU, checksum
    /// it on the GPU, and the sum must be that of what was filled.
    fn verify(&mut self) {
        let found = self.binds.iter().find_map(|b| {
            let h = b.whole_bo?;
            let bo = self.bos.iter().find(|o| o.handle == h && o.private)?;
            Some((b.va, bo.size, h))
        });
        let Some((va, size, h)) = found else { return };
        let value = self.rng.next_u64() as u32;
        let cmds = [Cmd::fill(va, size, value), Cmd::checksum(RES_VA, va, size)];
        let r = self.dev.run(&cmds);
        self.tally.record("verify", &r);
        match r {
            Ok((0, _)) => {
                let want = fnv1a64(&filled(size as usize, value));
                let got = self.res.read_u64(0);
                self.tally.bytes_checked += size;
                if got != want {
                    self.tally.violation(format!(
                        "BO {h} ({size} bytes at {va:#x}): GPU checksum after a fill with \
                         {value:#x} is {got:#x}, expected {want:#x}"
                    ));
                }
            }
            other => self.tally.violation(format!(
                "fill and checksum of BO {h}, bound whole at {va:#x}: {other:?}"
            )),
        }
    }

    /// A GPU write where nothing was ever bound faults exactly there.
    fn unbound_faults(&mut self) {
        let at = NEVER_VA + 8 * self.rng.below(512);
        let r = self.dev.run(&[Cmd::atomic_add(at, 1, 1)]);
        self.tally.record("unbound_fault", &r);
        match r {
            Ok((s, fault)) if s == -libc::EFAULT && fault == at => {}
            other => self.tally.violation(format!(
                "a GPU write at never-bound {at:#x}: {other:?}, expected (-EFAULT, {at:#x})"
            )),
        }
    }

    /// A driver ioctl number, possibly unknown, with random contents.
    fn raw_ioctl(&mut self) {
        let nr = DRM_COMMAND_BASE + self.rng.below(16) as u32;
        // USERPTR could make the GPU write wherever the random bytes
        // point, the fuzzer included: it is fuzzed through `userptr()`.
        if nr == DRM_COMMAND_BASE + DRM_SOFTGPU_USERPTR {
            return;
        }
        let size = self.rng.pick(&[0u32, 8, 16, 24, 32, 40, 48, 64]);
        let dir = self.rng.pick(&[1u32, 2, 3]); // _IOC_WRITE, _IOC_READ, both
        let req = ((dir as libc::c_ulong) << 30)
            | ((size as libc::c_ulong) << 16)
            | ((DRM_IOCTL_BASE as libc::c_ulong) << 8)
            | nr as libc::c_ulong;
        let mut arg = [0u8; 64];
        for b in arg.iter_mut() {
            *b = self.rng.next_u64() as u8;
        }
        let r = self.dev.ioctl(req, &mut arg);
        self.tally.record(&format!("ioctl_{:#x}", nr), &r);
    }

    /// A child process shares the parent's DRM file and mappings; it asks
    /// about the file, opens one of its own, runs a job and exits.
    fn fork(&mut self) {
        let h = self.handle();
        // SAFETY: the child calls only ioctls and mm calls with data on its
        // stack or already allocated, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = self.dev.info(h);
            if let Ok(dev) = Device::open() {
                if let Ok(c) = dev.create_bo(PAGE, 0) {
                    let _ = dev.bind(c, WINDOW, 0, PAGE, 0);
                    let _ = dev.exec(&[Cmd::fill(WINDOW, PAGE, 1)], 0);
                }
            }
            // Copy-on-write of the arena, bound as userptr in the parent.
            // SAFETY: the child's own copy of the arena; a fault on a page
            // the parent protected is avoided by mprotect first.
            unsafe {
                libc::mprotect(
                    self.arena.cast(),
                    PAGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                );
                core::ptr::write_volatile(self.arena, 1);
                libc::_exit(0);
            }
        }
        let r = if pid < 0 {
            Err(io::Error::last_os_error())
        } else {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                self.tally
                    .violation(format!("a forked child ended with status {status:#x}"));
            }
            Ok(())
        };
        self.tally.record("fork", &r);
    }

    /// Close dma-bufs and sync_files: the objects must outlive them.
    fn reopen_fds(&mut self) {
        self.fds.clear();
        self.tally.record("close_fds", &Ok(()));
    }

    /// Compaction from one worker at most, every few seconds.
    fn compact(&mut self) {
        if !self.compact || self.last_compact.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_compact = Instant::now();
        let r = std::fs::write("/proc/sys/vm/compact_memory", "1");
        self.tally.record("compact_memory", &r);
    }
}

/// Whether `[va, va + size)` touches the result BO or the never-bound
/// pages, which random bindings must leave alone.
fn reserved(va: u64, size: u64) -> bool {
    overlaps(va, size, RES_VA, PAGE) || overlaps(va, size, NEVER_VA, 2 * PAGE)
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len.max(1))
}

/// Runs one worker thread for `budget`.
fn work(seed: u64, budget: Duration, compact: bool) -> Tally {
    let mut w = match Worker::new(seed, compact) {
        Ok(w) => w,
        Err(e) => {
            let mut t = Tally::default();
            t.violation(format!("worker set-up: {e}"));
            return t;
        }
    };
    let end = Instant::now() + budget;
    while Instant::now() < end {
        w.step();
    }
    std::mem::take(&mut w.tally)
}

/// A run: `procs` processes of `threads` threads each, for `budget`.
pub struct Config {
    pub seed: u64,
    pub budget: Duration,
    pub procs: u64,
    pub threads: u64,
}

pub mod soak;

/// Runs the fuzzer; the tally of every worker, merged.
pub fn run(cfg: &Config) -> Tally {
    let mut children = Vec::new();
    for p in 0..cfg.procs {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are fresh descriptors, owned here.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child runs the workers and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            drop(rd);
            let (seed, budget, threads) = (cfg.seed, cfg.budget, cfg.threads);
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let s = worker_seed(seed, p * threads + t);
                    let compact = p == 0 && t == 0;
                    std::thread::spawn(move || work(s, budget, compact))
                })
                .collect();
            let mut total = Tally::default();
            for h in handles {
                match h.join() {
                    Ok(t) => total.merge(t),
                    Err(_) => total.violation("a worker thread panicked".into()),
                }
            }
            let mut f = std::fs::File::from(wr);
            let _ = f.write_all(total.to_lines().as_bytes());
            // SAFETY: ends the worker process.
            unsafe { libc::_exit(0) };
        }
        drop(wr);
        children.push((pid, rd));
    }
    let mut total = Tally::default();
    let deadline = Instant::now() + cfg.budget + Duration::from_secs(600);
    for (pid, rd) in children {
        let mut text = String::new();
        let _ = std::fs::File::from(rd).read_to_string(&mut text);
        let mut status = 0;
        loop {
            // SAFETY: polling our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                total.violation(format!("worker process {pid} hung"));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            total.violation(format!(
                "worker process {pid} ended with status {status:#x}"
            ));
        }
        total.merge(Tally::from_lines(&text));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(worker_seed(42, 0), worker_seed(42, 1));
    }

    #[test]
    fn tallies_survive_the_pipe() {
        let mut t = Tally::default();
        t.record::<()>("GEM_CREATE", &Ok(()));
        t.record::<()>(
            "GEM_CREATE",
            &Err(io::Error::from_raw_os_error(libc::EINVAL)),
        );
        t.record::<()>(
            "GEM_CREATE",
            &Err(io::Error::from_raw_os_error(libc::EINVAL)),
        );
        t.violation("a\nb".into());
        t.bytes_checked = 4096;
        let back = Tally::from_lines(&t.to_lines());
        assert_eq!(back.calls, 3);
        assert_eq!(back.bytes_checked, 4096);
        assert_eq!(back.outcomes[&("GEM_CREATE".to_string(), libc::EINVAL)], 2);
        assert_eq!(back.violations, ["a b"]);
        assert!(!Tally::from_lines("garbage").violations.is_empty());
    }
}
