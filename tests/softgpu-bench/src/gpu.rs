//! softgpu objects for the benchmark: sets of BOs spread over several GPU
//! contexts (DRM files), filled by the GPU, a background stream of GPU jobs
//! over them, and the integrity check.
//!
//! softgpu marks every BO bound in a VM busy while a job of that VM runs
//! (busy BOs refuse async migration and delay sync migration for up to
//! 100 ms). The objects are therefore spread over `contexts` files and the
//! job stream visits the contexts in turn: at any time about one context's
//! share of the objects is busy, as with a GPU whose current work uses a
//! part of its memory.
//!
//! Objects are BOs (gemfs or pinned) or, for the userptr modes, ranges of
//! this process's anonymous memory bound with DRM_SOFTGPU_USERPTR (mirrored
//! through HMM, or pinned at bind): the same jobs run over both.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use softgpu::{fnv1a64, Cmd, Device, Mapping, SOFTGPU_BO_PINNED, SOFTGPU_USERPTR_PINNED};

use crate::json::{Obj, Put as _};
use crate::sys::{AnonMap, Ctx as _, R};
use crate::Mode;

/// GPU address of each context's result buffer, and of its first object.
pub const RES_VA: u64 = 1 << 28;
pub const OBJ_VA: u64 = 1 << 32;
/// Result buffer: one u64 slot per CHECKSUM.
const RES_SIZE: u64 = 64 << 10;
pub const SLOTS: usize = (RES_SIZE / 8) as usize;
/// At most this many commands, and this many bytes of objects, per FILL
/// or verification job: a job must finish well within [`WAIT_NS`] even on
/// an emulated CPU.
const CMDS_PER_JOB: usize = 2048;
pub const BYTES_PER_JOB: u64 = 64 << 20;
/// WAIT timeout: generous, the guest is emulated.
const WAIT_NS: i64 = Device::RUN_TIMEOUT_NS;

/// The fill values objects cycle through, and the FNV-1a hash of an object
/// filled with each (computed once per object size).
pub struct Patterns {
    pub size: u64,
    pub values: Vec<u32>,
    pub hashes: Vec<u64>,
}

pub const NVALUES: usize = 16;

pub fn value(k: usize) -> u32 {
    ((k as u32) + 1).wrapping_mul(0x9e37_79b9) ^ 0xa5a5_0f0f
}

impl Patterns {
    pub fn new(size: u64) -> Self {
        let values: Vec<u32> = (0..NVALUES).map(value).collect();
        let hashes = values
            .iter()
            .map(|&v| fnv1a64(&softgpu::filled(size as usize, v)))
            .collect();
        Self {
            size,
            values,
            hashes,
        }
    }
}

/// One object: its handle (BOs) or its memory (userptr), its GPU address
/// in its context, and its index in the set.
pub struct Bo {
    pub handle: u32,
    pub mem: Option<AnonMap>,
    pub va: u64,
    pub index: usize,
}

/// One GPU context: a DRM file with its VM, a result buffer (mapped for
/// the CPU) and its share of the objects. The file is dropped first: its
/// bindings go before the userptr memory is unmapped.
pub struct Ctx {
    pub dev: Device,
    res: Mapping,
    pub bos: Vec<Bo>,
    next_va: u64,
}

impl Ctx {
    /// A new DRM file whose result buffer is a BO created with `flags`.
    pub fn new(flags: u32) -> R<Self> {
        let dev = Device::open().ctx("opening the softgpu render node")?;
        let h = dev
            .create_bo(RES_SIZE, flags)
            .ctx("GEM_CREATE of the result buffer")?;
        dev.bind(h, RES_VA, 0, RES_SIZE, 0)
            .ctx("VM_BIND of the result buffer")?;
        let res = dev
            .mmap_bo(h, RES_SIZE as usize)
            .ctx("mmap of the result buffer")?;
        Ok(Self {
            dev,
            res,
            bos: Vec::new(),
            next_va: OBJ_VA,
        })
    }

    /// Submits `cmds`; returns the seqno.
    pub fn submit(&self, cmds: &[Cmd], what: &str) -> R<u64> {
        Ok(self.dev.exec(cmds, 0).ctx(format!("EXEC of {what}"))?.0)
    }

    /// Waits for job `seqno`, which must succeed.
    pub fn wait_ok(&self, seqno: u64, what: &str) -> R<()> {
        let (status, fault) = self
            .dev
            .wait(seqno, WAIT_NS)
            .ctx(format!("WAIT for {what}"))?;
        if status != 0 {
            return Err(format!(
                "{what}: GPU job failed with status {status} ({}) at GPU address {fault:#x}",
                std::io::Error::from_raw_os_error(-status)
            ));
        }
        Ok(())
    }

    /// Result slot `i` (written by a CHECKSUM to `RES_VA + 8 * i`).
    pub fn slot(&self, i: usize) -> u64 {
        self.res.read_u64(i * 8)
    }
}

/// A set of objects of one kind (the GPU modes of [`Mode`]: gemfs or
/// pinned BOs, userptr mirrored or pinned), spread round-robin over the
/// contexts, with the fill value index of each.
pub struct BoSet {
    pub mode: Mode,
    pub ctxs: Vec<Ctx>,
    pub vals: Vec<u8>,
    pub pat: Patterns,
}

/// What the background job stream did.
#[derive(Default)]
pub struct Stream {
    pub stop: AtomicBool,
    pub jobs: AtomicU64,
}

/// Sets the stream's stop flag when dropped (also on early returns).
pub struct StopOnDrop<'a>(pub &'a Stream);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

impl BoSet {
    /// A set of `mode` objects of `size` bytes. The result buffers are BOs
    /// of the same kind for BO modes; for userptr modes, gemfs BOs (movable,
    /// like the memory of the control mode).
    pub fn new(contexts: usize, mode: Mode, size: u64) -> R<Self> {
        if mode == Mode::Control {
            return Err("BoSet: the control mode has no GPU objects".into());
        }
        let flags = if mode == Mode::Pinned {
            SOFTGPU_BO_PINNED
        } else {
            0
        };
        let ctxs = (0..contexts.max(1))
            .map(|_| Ctx::new(flags))
            .collect::<R<Vec<_>>>()?;
        Ok(Self {
            mode,
            ctxs,
            vals: Vec::new(),
            pat: Patterns::new(size),
        })
    }

    /// Objects created so far (the index the next one gets).
    pub fn len(&self) -> usize {
        self.vals.len()
    }

    /// Objects still there: created and not removed.
    pub fn live(&self) -> usize {
        self.ctxs.iter().map(|c| c.bos.len()).sum()
    }

    /// Removes the `pick`-th live object (counting through the contexts in
    /// turn, `pick` taken modulo [`live`](Self::live)): unbound and closed,
    /// so its memory is freed. Returns its size.
    pub fn remove(&mut self, pick: usize) -> R<u64> {
        let live = self.live();
        if live == 0 {
            return Err("BoSet::remove: no objects".into());
        }
        let mut pick = pick % live;
        let size = self.pat.size;
        for ctx in &mut self.ctxs {
            if pick >= ctx.bos.len() {
                pick -= ctx.bos.len();
                continue;
            }
            let bo = ctx.bos.swap_remove(pick);
            if bo.mem.is_some() {
                return Err("BoSet::remove: userptr objects are not removed".into());
            }
            ctx.dev
                .unbind(bo.va, size)
                .ctx(format!("VM_UNBIND of object {}", bo.index))?;
            ctx.dev
                .close_bo(bo.handle)
                .ctx(format!("GEM_CLOSE of object {}", bo.index))?;
            return Ok(size);
        }
        unreachable!("pick < live")
    }

    /// Objects per FILL or verification job.
    fn per_job(&self) -> usize {
        ((BYTES_PER_JOB / self.pat.size) as usize).clamp(1, CMDS_PER_JOB.min(SLOTS))
    }

    fn is_userptr(&self) -> bool {
        matches!(self.mode, Mode::UserptrHmm | Mode::UserptrPinned)
    }

    /// Creates `n` more objects, binds each in its context and fills them
    /// with GPU FILL jobs, one job per context. A pinned BO's pages are
    /// allocated at bind, a gemfs BO's by the GPU's page faults. A userptr
    /// object is anonymous memory allocated and mlock()ed as the control
    /// mode's (the same footprint, never reclaimed, still movable), then
    /// bound: pinned mode pins it there (FOLL_LONGTERM), HMM mode maps it
    /// into the GPU at the FILL's faults.
    pub fn add(&mut self, n: usize) -> R<()> {
        let size = self.pat.size;
        let nctx = self.ctxs.len();
        let userptr = self.is_userptr();
        let flags = match self.mode {
            Mode::Pinned => SOFTGPU_BO_PINNED,
            Mode::UserptrPinned => SOFTGPU_USERPTR_PINNED,
            _ => 0,
        };
        let mut cmds: Vec<Vec<Cmd>> = vec![Vec::new(); nctx];
        for _ in 0..n {
            let index = self.vals.len();
            let c = index % nctx;
            let ctx = &mut self.ctxs[c];
            let va = ctx.next_va;
            let (handle, mem) = if userptr {
                let m = AnonMap::new(size as usize, 0)?;
                m.mlock()?;
                // SAFETY: the memory is only ever read through volatile
                // accesses (verify) and never written by the CPU while
                // bound; it outlives neither the binding (the file, which
                // removes it, is dropped first: see `Ctx`) nor matters if
                // it does (an unmapped userptr page just faults).
                unsafe { ctx.dev.userptr(m.addr() as u64, size, va, flags) }
                    .ctx(format!("USERPTR of object {index}"))?;
                (0, Some(m))
            } else {
                let handle = ctx
                    .dev
                    .create_bo(size, flags)
                    .ctx(format!("GEM_CREATE of object {index} ({size} bytes)"))?;
                ctx.dev
                    .bind(handle, va, 0, size, 0)
                    .ctx(format!("VM_BIND of object {index}"))?;
                (handle, None)
            };
            ctx.next_va += size;
            ctx.bos.push(Bo {
                handle,
                mem,
                va,
                index,
            });
            let v = (index % NVALUES) as u8;
            self.vals.push(v);
            cmds[c].push(Cmd::fill(va, size, self.pat.values[v as usize]));
        }
        let mut seqnos = Vec::new();
        for (c, cmds) in cmds.iter().enumerate() {
            for chunk in cmds.chunks(self.per_job()) {
                seqnos.push((c, self.ctxs[c].submit(chunk, "the FILL of new objects")?));
            }
        }
        for (c, s) in seqnos {
            self.ctxs[c].wait_ok(s, "the FILL of new objects")?;
        }
        Ok(())
    }

    /// The background stream: until `st.stop`, one job at a time, visiting
    /// the contexts in turn and an object of each: BUSY for `busy_us`, FILL
    /// the object with its next value, CHECKSUM it; the checksum must match.
    pub fn stream(
        ctxs: &[Ctx],
        vals: &mut [u8],
        pat: &Patterns,
        busy_us: u64,
        st: &Stream,
    ) -> R<u64> {
        if ctxs.iter().all(|c| c.bos.is_empty()) {
            return Err("job stream: no objects".into());
        }
        let mut k = 0usize;
        while !st.stop.load(Ordering::SeqCst) {
            if Self::stream_step(ctxs, vals, pat, busy_us, k)? {
                st.jobs.fetch_add(1, Ordering::SeqCst);
            }
            k += 1;
        }
        Ok(st.jobs.load(Ordering::SeqCst))
    }

    /// Step `k` of [`stream`](Self::stream): context `k % contexts`, its
    /// next object. Whether a job ran (not if that context has no objects).
    pub fn stream_step(
        ctxs: &[Ctx],
        vals: &mut [u8],
        pat: &Patterns,
        busy_us: u64,
        k: usize,
    ) -> R<bool> {
        let nctx = ctxs.len();
        let ctx = &ctxs[k % nctx];
        let round = k / nctx;
        if ctx.bos.is_empty() {
            return Ok(false);
        }
        let bo = &ctx.bos[round % ctx.bos.len()];
        let v = (vals[bo.index] as usize + 1) % NVALUES;
        let slot = round % SLOTS;
        let mut cmds = Vec::with_capacity(3);
        if busy_us > 0 {
            cmds.push(Cmd::busy(busy_us));
        }
        cmds.push(Cmd::fill(bo.va, pat.size, pat.values[v]));
        cmds.push(Cmd::checksum(RES_VA + slot as u64 * 8, bo.va, pat.size));
        let what = format!("background job {} on object {}", k + 1, bo.index);
        let s = ctx.submit(&cmds, &what)?;
        ctx.wait_ok(s, &what)?;
        vals[bo.index] = v as u8;
        let got = ctx.slot(slot);
        if got != pat.hashes[v] {
            return Err(format!(
                "DATA CORRUPTION: {what}: checksum after FILL {:#x} is {got:#x}, expected {:#x}",
                pat.values[v], pat.hashes[v]
            ));
        }
        Ok(true)
    }

    /// Checks every `every`-th object through the GPU (CHECKSUM through the
    /// GPU page table) and through the CPU (a mapping of the backing file,
    /// or the userptr memory itself: the first and last u32 of each page).
    /// Returns (objects checked, mismatches, descriptions of the first
    /// mismatches).
    pub fn verify(&self, every: usize) -> R<Verify> {
        let mut out = Verify::default();
        let every = every.max(1);
        for ctx in &self.ctxs {
            let mine: Vec<&Bo> = ctx.bos.iter().filter(|b| b.index % every == 0).collect();
            for chunk in mine.chunks(self.per_job()) {
                let cmds: Vec<Cmd> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, b)| Cmd::checksum(RES_VA + i as u64 * 8, b.va, self.pat.size))
                    .collect();
                let s = ctx.submit(&cmds, "the verification CHECKSUMs")?;
                ctx.wait_ok(s, "the verification CHECKSUMs")?;
                for (i, b) in chunk.iter().enumerate() {
                    let v = self.vals[b.index] as usize;
                    let got = ctx.slot(i);
                    out.checked += 1;
                    if got != self.pat.hashes[v] {
                        out.bad(format!(
                            "object {}: GPU checksum {got:#x}, expected {:#x} (filled with {:#x})",
                            b.index, self.pat.hashes[v], self.pat.values[v]
                        ));
                    }
                }
            }
            for b in mine {
                let want = self.pat.values[self.vals[b.index] as usize];
                let bo_map;
                let read_u32: &dyn Fn(usize) -> u32 = match &b.mem {
                    Some(m) => &|o| m.read_u32(o),
                    None => {
                        bo_map = ctx
                            .dev
                            .mmap_bo(b.handle, self.pat.size as usize)
                            .ctx(format!("mmap of object {}", b.index))?;
                        &|o| bo_map.read_u32(o)
                    }
                };
                for off in (0..self.pat.size as usize).step_by(crate::sys::PAGE) {
                    for o in [off, off + crate::sys::PAGE - 4] {
                        let got = read_u32(o);
                        if got != want {
                            out.bad(format!(
                                "object {}: CPU read {got:#x} at offset {o:#x}, expected {want:#x}",
                                b.index
                            ));
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// GEM_INFO counters summed over the objects (BOs only: a userptr has
    /// no GEM object).
    pub fn info(&self) -> R<Obj> {
        let mut o = Obj::new();
        if self.is_userptr() {
            o.put("userptr_objects", self.len());
            return Ok(o);
        }
        let (mut resident, mut released, mut refused, mut faults) = (0, 0, 0, 0);
        for ctx in &self.ctxs {
            for b in &ctx.bos {
                let i = ctx
                    .dev
                    .info(b.handle)
                    .ctx(format!("GEM_INFO of object {}", b.index))?;
                resident += i.resident_pages;
                released += i.released;
                refused += i.refused;
                faults += i.gpu_faults;
            }
        }
        o.put("resident_pages", resident)
            .put("released", released)
            .put("refused", refused)
            .put("gpu_faults", faults);
        Ok(o)
    }

    /// CPU mappings of every object (for move_pages), each page read once
    /// so that it is mapped.
    pub fn map_all(&self) -> R<Vec<Mapping>> {
        let mut maps = Vec::new();
        for ctx in &self.ctxs {
            for b in &ctx.bos {
                let m = ctx
                    .dev
                    .mmap_bo(b.handle, self.pat.size as usize)
                    .ctx(format!("mmap of object {}", b.index))?;
                for off in (0..m.len()).step_by(crate::sys::PAGE) {
                    m.read_u32(off);
                }
                maps.push(m);
            }
        }
        Ok(maps)
    }
}

/// Outcome of an integrity check.
#[derive(Default, Debug)]
pub struct Verify {
    pub checked: u64,
    pub mismatches: u64,
    pub first: Vec<String>,
}

impl Verify {
    pub fn bad(&mut self, what: String) {
        self.mismatches += 1;
        if self.first.len() < 8 {
            self.first.push(what);
        }
    }

    /// Adds `other`'s findings to these (several sets checked as one).
    pub fn merge(&mut self, other: Verify) {
        self.checked += other.checked;
        self.mismatches += other.mismatches;
        let room = 8usize.saturating_sub(self.first.len());
        self.first.extend(other.first.into_iter().take(room));
    }

    /// `Err` naming the mismatches, if any object checked differed.
    pub fn ok(&self) -> Result<(), String> {
        if self.mismatches == 0 {
            return Ok(());
        }
        Err(format!(
            "DATA CORRUPTION: {} of {} objects checked differ: {:?}",
            self.mismatches, self.checked, self.first
        ))
    }

    pub fn to_obj(&self) -> Obj {
        let mut o = Obj::new();
        o.put("checked", self.checked)
            .put("mismatches", self.mismatches)
            .put("first_mismatches", self.first.clone());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_distinct() {
        let mut v: Vec<u32> = (0..NVALUES).map(value).collect();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), NVALUES);
    }

    #[test]
    fn pattern_hashes_match_filled_objects() {
        let p = Patterns::new(8192);
        assert_eq!(p.hashes[3], fnv1a64(&softgpu::filled(8192, value(3))));
    }
}
