// SPDX-License-Identifier: GPL-2.0

//! The device page table of a GPU virtual address space, and its modelled
//! TLB.
//!
//! The page table has three levels of 512 entries over a 39-bit address
//! space, like a small x86 one. A modelled TLB caches translations and is
//! flushed whenever an entry is cleared or changed.
//!
//! An entry maps a page of system memory or of the device's VRAM, with a
//! permission; the table knows nothing of what put it there (objects,
//! userptrs, and the VM above them, use this module; it uses none of them).
//! The engine reads and writes the page behind an entry through
//! [`PageTable::access`].
//!
//! Locks: the table is behind its VM's `pt` spinlock
//! (Documentation/gpu/softgpu.rst, "Lock order"). [`PageTable::reserve`]
//! takes it, allocating the tables outside it; [`PageTable::access`]
//! takes the VRAM BAR's spinlock under it, for a VRAM page.

use crate::vram::Slot;
use kernel::{c_str, folio::Folio, pci, prelude::*, sync::SpinLock, uapi};

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

/// What an entry points at: its address space and the page in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A page of system memory, by page frame number.
    System(usize),
    /// A page of the device's VRAM, by byte offset into it (a multiple of
    /// [`PAGE`]).
    Vram(u64),
}

/// A present leaf entry, packed like a hardware one: the frame number from
/// bit 12 up, an address space bit and permission bits below. The frame is
/// a page frame number of system memory or, with the address space bit
/// (`VRAM`), a page of the device's VRAM (its offset in the VRAM BAR,
/// shifted). Never zero (`PRESENT`), so that `Option<Pte>` is eight bytes
/// and a leaf table of 512 entries fills exactly one page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pte(core::num::NonZeroU64);

impl Pte {
    const PRESENT: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const ATOMIC: u64 = 1 << 2;
    /// The address space bit: the frame is a VRAM page, not a system one.
    const VRAM: u64 = 1 << 3;
    const PFN_SHIFT: u32 = 12;

    fn encode(frame: u64, space: u64, perm: Perm) -> Self {
        let bits = match perm {
            Perm::Read => 0,
            Perm::Write => Self::WRITE,
            Perm::Atomic => Self::WRITE | Self::ATOMIC,
        };
        let raw = (frame << Self::PFN_SHIFT) | space | bits | Self::PRESENT;
        // `PRESENT` is set.
        Self(core::num::NonZeroU64::new(raw).unwrap_or(core::num::NonZeroU64::MIN))
    }

    /// An entry for system page frame `pfn`, allowing `perm`.
    pub(crate) fn system(pfn: usize, perm: Perm) -> Self {
        Self::encode(pfn as u64, 0, perm)
    }

    /// An entry for the VRAM page at byte `offset` of the VRAM (rounded
    /// down to a page), allowing `perm`.
    pub(crate) fn vram(offset: u64, perm: Perm) -> Self {
        Self::encode(offset / PAGE, Self::VRAM, perm)
    }

    /// Where the entry points.
    pub(crate) fn target(self) -> Target {
        let raw = self.0.get();
        let frame = raw >> Self::PFN_SHIFT;
        if raw & Self::VRAM != 0 {
            Target::Vram(frame * PAGE)
        } else {
            Target::System(frame as usize)
        }
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
///
/// # Invariants
///
/// What a present entry points at stays there while it is present, and
/// entries are cleared under the table's lock: a system page stays
/// allocated (whoever sets the entry holds the page, or clears the entry
/// before it can go), and a VRAM page stays the memory of the object that
/// put it there (a TTM object clears its entries before TTM frees or
/// moves its memory, `tbo.rs`), in the VRAM of the bound device (VRAM is
/// allocated by the device's resource manager, which evicts every object
/// before the device is unbound). So an entry and what it points at can
/// be used for as long as the table is borrowed ([`PageTable::access`]).
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

    /// Calls `f` on the page that `va` translates to, if its entry allows
    /// `perm`; `None` if it does not (missing, or not allowing `perm`: a GPU
    /// page fault). A VRAM page is reached through the BAR of the VRAM
    /// device bound in `vram`, under its lock.
    ///
    /// This is what the engine reads and writes memory through: under the
    /// table's lock, so that the entry, and the page behind it, stay while
    /// `f` runs. It takes no other lock but the BAR's, a spinlock, and
    /// allocates nothing: it runs in a fence's signalling critical section.
    pub(crate) fn access<R>(
        &mut self,
        va: u64,
        perm: Perm,
        vram: &Slot,
        f: impl FnOnce(&Page<'_>) -> R,
    ) -> Option<R> {
        let pte = self.lookup(va).filter(|pte| pte.allows(perm))?;
        match pte.target() {
            Target::System(pfn) => {
                // SAFETY: the page stays allocated while we hold `pt`
                // (`&mut self`, the type invariant). For an object, an entry
                // exists only while the object holds the folio, and entries
                // are cleared under this lock before a hold is dropped (a
                // TTM object's, before its `ttm_tt` gives up its pages:
                // `move_notify`); for an imported object, while its attachment keeps the
                // exporter's pages in place, which lasts until the object is
                // freed, after its bindings (which clear their entries under
                // this lock) are gone. For a userptr no reference is held:
                // the entry was set under this lock after the notifier's
                // sequence check (`Range::fault_locked`), and every change to
                // the CPU mapping clears it under this lock (in the
                // notifier's callback) before the page can be unmapped and
                // freed; so while the entry is present and the lock held, the
                // CPU still maps the page. A pinned userptr's entries are
                // cleared under this lock before its pins are dropped.
                let folio = unsafe { Folio::from_pfn(pfn) };
                let base = (pfn - folio.pfn()) * PAGE as usize;
                Some(f(&Page::System(folio, base)))
            }
            Target::Vram(offset) => {
                let base = usize::try_from(offset).ok()?;
                let r = vram.with_bar(|bar| f(&Page::Vram(bar, base)));
                if r.is_none() {
                    // The type invariant does not hold: a VRAM entry with
                    // no VRAM. Faults, rather than reach memory.
                    kernel::lockdep::warn(c_str!("softgpu: a VRAM entry without VRAM"));
                }
                r
            }
        }
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

/// A page that an entry points at, as [`PageTable::access`] lends it: the
/// engine reads and writes it at byte offsets within the page.
pub(crate) enum Page<'a> {
    /// A system page: its folio, and the page's byte offset in the folio.
    System(&'a Folio, usize),
    /// A VRAM page: the BAR's mapping, and the page's byte offset in it.
    Vram(&'a pci::Bar, usize),
}

impl Page<'_> {
    /// The byte offset of `[off, off + len)` of the page in its folio or
    /// BAR; `EINVAL` if the range leaves the page.
    fn at(&self, off: usize, len: usize) -> Result<usize> {
        let base = match self {
            Page::System(_, base) | Page::Vram(_, base) => *base,
        };
        match off.checked_add(len) {
            Some(end) if end <= PAGE as usize => Ok(base + off),
            _ => Err(EINVAL),
        }
    }

    /// Copies the bytes at `off` into `out`.
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) -> Result {
        let at = self.at(off, out.len())?;
        match self {
            Page::System(folio, _) => folio.read(at, out),
            Page::Vram(bar, _) => bar.try_copy_from(at, out),
        }
    }

    /// Copies `data` to `off`. A write to VRAM is flushed from the
    /// write-combining buffers before this returns, so that whoever is told
    /// the job is done (the CPU, through its mapping of the BAR) sees it.
    pub(crate) fn write(&self, off: usize, data: &[u8]) -> Result {
        let at = self.at(off, data.len())?;
        match self {
            Page::System(folio, _) => folio.write(at, data),
            Page::Vram(bar, _) => {
                bar.try_copy_to(at, data)?;
                bar.flush_wc();
                Ok(())
            }
        }
    }

    /// Adds `value`, `times` times, to the naturally aligned 64-bit integer
    /// at `off`; returns its value after the last addition. `EINVAL` if
    /// misaligned.
    ///
    /// In system memory each addition is one atomic read-modify-write, so
    /// the CPU's atomics on the same counter lose no update. In VRAM, the
    /// device's own memory, the additions are one read and one write
    /// through the BAR, under the table's lock: atomic for the device
    /// (which has one engine), not for a CPU writing the counter through a
    /// mapping of the BAR at the same time, as with a discrete GPU's VRAM
    /// and the CPU's writes to it across the bus.
    pub(crate) fn atomic_add_u64(&self, off: usize, value: u64, times: u64) -> Result<u64> {
        if off % 8 != 0 {
            return Err(EINVAL);
        }
        let at = self.at(off, 8)?;
        match self {
            Page::System(folio, _) => folio.atomic_add_u64(at, value, times),
            Page::Vram(bar, _) => {
                let v = bar.try_read64(at)?.wrapping_add(value.wrapping_mul(times));
                bar.try_write64(v, at)?;
                bar.flush_wc();
                Ok(v)
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

#[cfg(CONFIG_DRM_SOFTGPU_KUNIT_TEST)]
#[kernel::kunit::kunit_tests(softgpu_pt)]
mod tests {
    use super::*;
    use kernel::page::PAGE_SIZE;

    const VA: u64 = 0x4000_0000;
    /// The span of one leaf table: 2 MiB.
    const LEAF_SPAN: u64 = ENTRIES as u64 * PAGE;

    /// A page table with the tables of `[VA, VA + LEAF_SPAN)`. Not behind
    /// a lock: a failed assertion must not leave one held.
    fn table() -> Result<PageTable> {
        let mut pt = PageTable::new()?;
        let (mut mid, mut leaf) = (Some(new_table()?), Some(new_table()?));
        pt.add_tables(VA, &mut mid, &mut leaf);
        Ok(pt)
    }

    #[test]
    fn entries_of_both_address_spaces() {
        let perms = [Perm::Read, Perm::Write, Perm::Atomic];
        for &perm in &perms {
            let s = Pte::system(0x12345, perm);
            let v = Pte::vram(0x12345 * PAGE, perm);
            assert_eq!(s.target(), Target::System(0x12345));
            assert_eq!(v.target(), Target::Vram(0x12345 * PAGE));
            // The same frame number in the two address spaces: two entries.
            assert!(s != v);
            // Each permission allows the ones before it, in either space.
            for &p in &perms {
                assert_eq!(s.allows(p), p <= perm);
                assert_eq!(v.allows(p), p <= perm);
            }
        }
        // Frame 0 of either space is a present entry too.
        assert_eq!(Pte::system(0, Perm::Read).target(), Target::System(0));
        assert_eq!(Pte::vram(0, Perm::Read).target(), Target::Vram(0));
        // A VRAM offset is that of its page; the last page of 512 MiB.
        assert_eq!(
            Pte::vram(PAGE + 123, Perm::Read).target(),
            Target::Vram(PAGE)
        );
        let last = (512 << 20) - PAGE;
        assert_eq!(Pte::vram(last, Perm::Write).target(), Target::Vram(last));
        // Eight bytes, present or not.
        assert_eq!(core::mem::size_of::<Option<Pte>>(), 8);
    }

    #[test]
    fn set_lookup_and_replace() -> Result {
        let mut pt = table()?;
        let sys = Pte::system(0x1000, Perm::Write);
        let vram = Pte::vram(0x20_0000, Perm::Atomic);
        assert!(pt.lookup(VA).is_none());
        // No leaf table there: nothing set.
        assert!(!pt.set(VA + LEAF_SPAN, sys));
        assert!(pt.lookup(VA + LEAF_SPAN).is_none());

        assert!(pt.set(VA, sys));
        assert!(pt.set(VA + PAGE, vram));
        assert_eq!(pt.present, 2);
        assert!(pt.lookup(VA) == Some(sys));
        assert!(pt.lookup(VA + PAGE) == Some(vram));
        // Setting an entry again changes nothing and flushes nothing.
        let flushes = pt.tlb_flushes;
        assert!(!pt.set(VA, sys));
        assert_eq!(pt.tlb_flushes, flushes);
        // The page moved to VRAM: the translation the TLB cached goes.
        assert!(pt.lookup(VA) == Some(sys));
        let moved = Pte::vram(0x30_0000, Perm::Write);
        assert!(!pt.set(VA, moved));
        assert_eq!(pt.tlb_flushes, flushes + 1);
        assert!(pt.lookup(VA) == Some(moved));
        // And back to system memory, read-only now.
        let back = Pte::system(0x1000, Perm::Read);
        assert!(!pt.set(VA, back));
        assert_eq!(pt.tlb_flushes, flushes + 2);
        assert!(pt.lookup(VA) == Some(back));
        assert_eq!(pt.present, 2);
        Ok(())
    }

    /// Clearing an entry flushes the TLB: the translation it cached would
    /// otherwise send the next access to the page that has left (issue 13,
    /// item 18; the uAPI test `a_released_page_leaves_no_stale_entry_in_the_device_tlb`
    /// shows it through migration and the shrinker).
    #[test]
    fn clear_flushes_the_tlb() -> Result {
        let mut pt = table()?;
        for pte in [Pte::system(0x4242, Perm::Atomic), Pte::vram(0, Perm::Read)] {
            assert!(pt.set(VA, pte));
            // Cached now.
            assert!(pt.lookup(VA) == Some(pte));
            let flushes = pt.tlb_flushes;
            assert!(pt.clear(VA));
            assert_eq!(pt.tlb_flushes, flushes + 1);
            assert_eq!(pt.present, 0);
            assert!(pt.lookup(VA).is_none());
            // Clearing nothing flushes nothing.
            assert!(!pt.clear(VA));
            assert!(!pt.clear(VA + LEAF_SPAN));
            assert_eq!(pt.tlb_flushes, flushes + 1);
        }
        Ok(())
    }

    /// The engine's access through a system entry: the right page of the
    /// folio, within the page, with the entry's permissions.
    #[test]
    fn access_through_system_entries() -> Result {
        let folio = Folio::alloc(GFP_KERNEL | __GFP_ZERO, 1)?;
        // No VRAM device: only system entries can be reached.
        let no_vram = Slot::new()?;
        let mut pt = table()?;
        // The folio's second page, for atomics; its first, read-only.
        pt.set(VA, Pte::system(folio.pfn() + 1, Perm::Atomic));
        pt.set(VA + PAGE, Pte::system(folio.pfn(), Perm::Read));

        let wrote = pt.access(VA, Perm::Write, &no_vram, |p| p.write(16, b"gemfs"));
        assert!(wrote == Some(Ok(())));
        let mut word = [0u8; 5];
        folio.read(PAGE_SIZE + 16, &mut word)?;
        assert!(&word == b"gemfs");
        let added = pt.access(VA, Perm::Atomic, &no_vram, |p| p.atomic_add_u64(8, 3, 5));
        assert!(added == Some(Ok(15)));
        let mut back = [0u8; 8];
        let read = pt.access(VA, Perm::Read, &no_vram, |p| p.read(8, &mut back));
        assert!(read == Some(Ok(())));
        assert_eq!(u64::from_ne_bytes(back), 15);

        // Read-only: no write, no atomic; reads see the first page.
        assert!(pt
            .access(VA + PAGE, Perm::Write, &no_vram, |_| ())
            .is_none());
        assert!(pt
            .access(VA + PAGE, Perm::Atomic, &no_vram, |_| ())
            .is_none());
        let read = pt.access(VA + PAGE, Perm::Read, &no_vram, |p| p.read(8, &mut back));
        assert!(read == Some(Ok(())));
        assert_eq!(u64::from_ne_bytes(back), 0);

        // Accesses stay in the page, atomics aligned.
        let mut two = [0u8; 8];
        let over = pt.access(VA, Perm::Read, &no_vram, |p| {
            p.read(PAGE_SIZE - 4, &mut two)
        });
        assert!(over == Some(Err(EINVAL)));
        let odd = pt.access(VA, Perm::Atomic, &no_vram, |p| p.atomic_add_u64(4, 1, 1));
        assert!(odd == Some(Err(EINVAL)));
        // Nothing mapped there.
        assert!(pt
            .access(VA + 2 * PAGE, Perm::Read, &no_vram, |_| ())
            .is_none());

        // The folio goes after its entries.
        assert!(pt.clear(VA) && pt.clear(VA + PAGE));
        drop(pt);
        drop(folio);
        Ok(())
    }
}
