// SPDX-License-Identifier: GPL-2.0

//! The device page table of a GPU virtual address space, and its modelled
//! TLB.
//!
//! The page table has three levels of 512 entries over a 39-bit address
//! space, like a small x86 one. A modelled TLB caches translations and is
//! flushed whenever an entry is cleared or changed.
//!
//! Locks: the table is behind its VM's `pt` spinlock
//! (Documentation/gpu/softgpu.rst, "Lock order"); nothing here takes a
//! lock but [`PageTable::reserve`], which allocates the tables outside it.

use kernel::{prelude::*, sync::SpinLock, uapi};

/// GPU page size.
pub(crate) const PAGE: u64 = uapi::SOFTGPU_PAGE_SIZE as u64;
/// End of the GPU virtual address space.
pub(crate) const VA_END: u64 = 1 << uapi::SOFTGPU_VA_BITS;
const ENTRIES: usize = 512;
const TLB_ENTRIES: usize = 8;

/// What the engine may do through a page table entry; each level allows
/// the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Perm {
    Read,
    Write,
    /// Atomic read-modify-write. Always allowed on writable object memory
    /// (the device's own); on userptr memory only while the device holds
    /// the page exclusive (`make_device_exclusive_range()`), as a device
    /// whose atomics do not work across the bus to system memory must.
    Atomic,
}

/// A present leaf entry, packed like a hardware one: the page frame number
/// from bit 12 up, permission bits below. Never zero (`PRESENT`), so that
/// `Option<Pte>` is eight bytes and a leaf table of 512 entries fills
/// exactly one page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pte(core::num::NonZeroU64);

impl Pte {
    const PRESENT: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const ATOMIC: u64 = 1 << 2;
    const PFN_SHIFT: u32 = 12;

    /// An entry for page frame `pfn`, allowing `perm`.
    pub(crate) fn new(pfn: usize, perm: Perm) -> Self {
        let bits = match perm {
            Perm::Read => 0,
            Perm::Write => Self::WRITE,
            Perm::Atomic => Self::WRITE | Self::ATOMIC,
        };
        let raw = ((pfn as u64) << Self::PFN_SHIFT) | bits | Self::PRESENT;
        // `PRESENT` is set.
        Self(core::num::NonZeroU64::new(raw).unwrap_or(core::num::NonZeroU64::MIN))
    }

    /// The page frame number.
    pub(crate) fn pfn(self) -> usize {
        (self.0.get() >> Self::PFN_SHIFT) as usize
    }

    /// Whether the entry allows `perm`.
    pub(crate) fn allows(self, perm: Perm) -> bool {
        let raw = self.0.get();
        match perm {
            Perm::Read => true,
            Perm::Write => raw & Self::WRITE != 0,
            Perm::Atomic => raw & Self::ATOMIC != 0,
        }
    }
}

// One page per leaf table (see `Pte`).
const _: () = assert!(core::mem::size_of::<Leaf>() == 4096);

type Leaf = [Option<Pte>; ENTRIES];
type Mid = [Option<KBox<Leaf>>; ENTRIES];
type Top = [Option<KBox<Mid>>; ENTRIES];

fn indexes(va: u64) -> (usize, usize, usize) {
    let i = |shift: u64| ((va >> shift) as usize) % ENTRIES;
    (i(30), i(21), i(12))
}

/// Allocates a table whose entries are all `None`.
fn new_table<T>() -> Result<KBox<[Option<T>; ENTRIES]>> {
    let mut b = KBox::<[Option<T>; ENTRIES]>::new_uninit(GFP_KERNEL)?;
    let p = b.as_mut_ptr().cast::<Option<T>>();
    for i in 0..ENTRIES {
        // SAFETY: `p` points to `ENTRIES` uninitialised entries.
        unsafe { p.add(i).write(None) };
    }
    // SAFETY: every entry was written above.
    Ok(unsafe { b.assume_init() })
}

/// The device page table and its modelled TLB.
pub(crate) struct PageTable {
    top: KBox<Top>,
    tlb: [Option<(u64, Pte)>; TLB_ENTRIES],
    pub(crate) tlb_flushes: u64,
    pub(crate) present: u64,
    /// The invalidations that clear entries only after waiting for the
    /// jobs that use them (a userptr's notifier), which commits check.
    pub(crate) invalidation_seq: InvalidationSeq,
}

impl PageTable {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            top: new_table()?,
            tlb: [None; TLB_ENTRIES],
            tlb_flushes: 0,
            present: 0,
            invalidation_seq: InvalidationSeq::default(),
        })
    }

    fn leaf(&self, va: u64) -> Option<&Leaf> {
        let (t, m, _) = indexes(va);
        self.top[t].as_ref()?[m].as_deref()
    }

    fn leaf_mut(&mut self, va: u64) -> Option<&mut Leaf> {
        let (t, m, _) = indexes(va);
        self.top[t].as_mut()?[m].as_deref_mut()
    }

    /// Translates `va`, through the TLB.
    pub(crate) fn lookup(&mut self, va: u64) -> Option<Pte> {
        let vpn = va / PAGE;
        let slot = (vpn as usize) % TLB_ENTRIES;
        if let Some((v, pte)) = self.tlb[slot] {
            if v == vpn {
                return Some(pte);
            }
        }
        let pte = self.leaf(va)?[indexes(va).2]?;
        self.tlb[slot] = Some((vpn, pte));
        Some(pte)
    }

    /// Sets the entry of `va`; the tables must have been reserved. Returns
    /// whether it was not present before. Flushes the TLB if it replaces a
    /// different entry.
    pub(crate) fn set(&mut self, va: u64, pte: Pte) -> bool {
        let Some(leaf) = self.leaf_mut(va) else {
            return false;
        };
        let e = &mut leaf[indexes(va).2];
        let old = e.replace(pte);
        match old {
            None => self.present += 1,
            // A changed translation (e.g. a userptr page made writable, or
            // exclusive for atomics): the TLB may cache the old one.
            Some(o) if o != pte => {
                self.tlb = [None; TLB_ENTRIES];
                self.tlb_flushes += 1;
            }
            Some(_) => {}
        }
        old.is_none()
    }

    /// Clears the entry of `va` and flushes the TLB. Returns whether it was
    /// present.
    pub(crate) fn clear(&mut self, va: u64) -> bool {
        let Some(leaf) = self.leaf_mut(va) else {
            return false;
        };
        let was = leaf[indexes(va).2].take().is_some();
        if was {
            self.present -= 1;
            self.tlb = [None; TLB_ENTRIES];
            self.tlb_flushes += 1;
        }
        was
    }

    /// Allocates the page tables of `[va, end)`, outside the table lock.
    pub(crate) fn reserve(pt: &SpinLock<Self>, va: u64, end: u64) -> Result {
        loop {
            let Some(missing) = pt.lock().first_missing(va, end) else {
                return Ok(());
            };
            let mut mid = Some(new_table()?);
            let mut leaf = Some(new_table()?);
            pt.lock().add_tables(missing, &mut mid, &mut leaf);
        }
    }

    /// The first 2 MiB region of `[va, end)` without a leaf table, if any.
    fn first_missing(&self, va: u64, end: u64) -> Option<u64> {
        let mut a = va & !(ENTRIES as u64 * PAGE - 1);
        while a < end {
            if self.leaf(a).is_none() {
                return Some(a);
            }
            a += ENTRIES as u64 * PAGE;
        }
        None
    }

    /// Adds the tables for `va`: `mid` is used if the middle level is
    /// missing, `leaf` if the leaf is.
    fn add_tables(&mut self, va: u64, mid: &mut Option<KBox<Mid>>, leaf: &mut Option<KBox<Leaf>>) {
        let (t, m, _) = indexes(va);
        if self.top[t].is_none() {
            self.top[t] = mid.take();
        }
        if let Some(mids) = self.top[t].as_mut() {
            if mids[m].is_none() {
                mids[m] = leaf.take();
            }
        }
    }
}

/// The invalidations of entries whose memory the table holds no reference
/// on (a userptr's, which its MMU notifier clears after waiting for the
/// last job), as a commit sees them: kept in the page table, under its
/// lock. Who invalidates does not matter to the table; a submission that
/// set such entries checks, when it publishes its job, that none was
/// cleared since, and that no invalidation is waiting to clear one.
#[derive(Default)]
pub(crate) struct InvalidationSeq {
    /// Bumped when an invalidation starts clearing and when it has cleared.
    gen: u64,
    /// Invalidations between the two (waiting for the VM's last job).
    running: u32,
}

impl InvalidationSeq {
    pub(crate) fn bump(&mut self) {
        self.gen = self.gen.wrapping_add(1);
    }

    pub(crate) fn begin(&mut self) {
        self.bump();
        self.running += 1;
    }

    pub(crate) fn end(&mut self) {
        self.bump();
        self.running -= 1;
    }

    /// A snapshot to check a commit against.
    pub(crate) fn read(&self) -> u64 {
        self.gen
    }

    /// Whether no invalidation started or ended since `snapshot`, and none
    /// is running: then every such entry present at `snapshot` is still
    /// valid, and any later invalidation waits for a job published now.
    pub(crate) fn unchanged(&self, snapshot: u64) -> bool {
        self.gen == snapshot && self.running == 0
    }

    /// Whether no invalidation is running (it may have cleared entries).
    pub(crate) fn idle(&self) -> bool {
        self.running == 0
    }
}
