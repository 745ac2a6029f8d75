// SPDX-License-Identifier: GPL-2.0

//! The GPU virtual address space of one DRM file: bindings of buffer
//! objects, and the device page table the engine translates through.
//!
//! The page table has three levels of 512 entries over a 39-bit address
//! space, like a small x86 one. A leaf entry exists only while the object
//! holds the folio it points to (see `bo.rs`); entries are filled when the
//! engine faults on an address of a binding and cleared by unbind and by
//! gemfs's release-for-migration. A modelled TLB caches translations and is
//! flushed whenever an entry is cleared.
//!
//! Locks: `bindings` (mutex) -> object state (spinlock) -> `pt` (spinlock).
//! The engine's fault path takes `bindings` and may lock folios under it;
//! gemfs's release callback, which runs with a folio locked, takes only the
//! two spinlocks.

use crate::bo::{Bo, GemObject};
use kernel::{
    new_mutex, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{Arc, Mutex, SpinLock},
    types::ARef,
    uapi,
};

/// GPU page size.
pub(crate) const PAGE: u64 = uapi::SOFTGPU_PAGE_SIZE as u64;
/// End of the GPU virtual address space.
pub(crate) const VA_END: u64 = 1 << uapi::SOFTGPU_VA_BITS;
const ENTRIES: usize = 512;
const TLB_ENTRIES: usize = 8;

/// A present leaf entry: page frame and permission.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pte {
    pub(crate) pfn: usize,
    pub(crate) writable: bool,
}

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
}

impl PageTable {
    fn new() -> Result<Self> {
        Ok(Self {
            top: new_table()?,
            tlb: [None; TLB_ENTRIES],
            tlb_flushes: 0,
            present: 0,
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
    /// whether it was not present before.
    pub(crate) fn set(&mut self, va: u64, pte: Pte) -> bool {
        let Some(leaf) = self.leaf_mut(va) else {
            return false;
        };
        let e = &mut leaf[indexes(va).2];
        let new = e.is_none();
        *e = Some(pte);
        if new {
            self.present += 1;
        }
        new
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

/// A binding: part of an object mapped at a GPU address.
pub(crate) struct Binding {
    pub(crate) obj: ARef<GemObject>,
    pub(crate) va: u64,
    pub(crate) bo_offset: u64,
    pub(crate) size: u64,
    pub(crate) readonly: bool,
}

/// The GPU address of object page `index` in a mapping of
/// `[bo_offset, bo_offset + size)` of the object at `va`, if it maps it.
pub(crate) fn va_of(va: u64, bo_offset: u64, size: u64, index: usize) -> Option<u64> {
    let off = (index as u64).checked_mul(PAGE)?;
    (off >= bo_offset && off < bo_offset + size).then(|| va + off - bo_offset)
}

impl Binding {
    /// The GPU address of object page `index`, if this binding maps it.
    pub(crate) fn va_of(&self, index: usize) -> Option<u64> {
        va_of(self.va, self.bo_offset, self.size, index)
    }
}

/// A GPU virtual address space.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    /// Bindings by start address.
    #[pin]
    pub(crate) bindings: Mutex<RBTree<u64, Binding>>,
    /// The device page table.
    #[pin]
    pub(crate) pt: SpinLock<PageTable>,
}

impl Vm {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let pt = PageTable::new()?;
        Arc::pin_init(
            pin_init!(Self {
                bindings <- new_mutex!(RBTree::new(), "softgpu_vm_bindings"),
                pt <- new_spinlock!(pt, "softgpu_vm_pt"),
            }),
            GFP_KERNEL,
        )
    }

    /// Maps `[bo_offset, bo_offset + size)` of `obj` at `va`. Arguments
    /// were range-checked by the caller; `EEXIST` on overlap.
    pub(crate) fn bind(
        self: &Arc<Self>,
        obj: ARef<GemObject>,
        va: u64,
        bo_offset: u64,
        size: u64,
        readonly: bool,
    ) -> Result {
        let end = va + size;
        let node = RBTreeNode::new(
            va,
            Binding {
                obj: obj.clone(),
                va,
                bo_offset,
                size,
                readonly,
            },
            GFP_KERNEL,
        )?;
        let mut bindings = self.bindings.lock();
        // The first binding at or above `va` must start at or after `end`,
        // and the one below must end at or before `va`.
        let overlaps = match bindings.cursor_lower_bound(&va) {
            Some(c) => {
                *c.current().0 < end || c.peek_prev().is_some_and(|(_, p)| p.va + p.size > va)
            }
            None => bindings
                .cursor_back()
                .is_some_and(|c| c.current().1.va + c.current().1.size > va),
        };
        if overlaps {
            return Err(EEXIST);
        }
        self.reserve_tables(va, end)?;
        obj.add_mapping(self, va, bo_offset, size)?;
        bindings.insert(node);
        drop(bindings);
        if obj.pinned {
            // Today's drivers acquire (pin) every page when binding.
            let mut a = va;
            while a < end {
                let present = self.pt.lock().lookup(a).is_some();
                if present {
                    a += PAGE;
                    continue;
                }
                if let Err(e) = self.fault(a, false, None) {
                    let _ = self.unbind(va, size);
                    return Err(e.err);
                }
                a += PAGE;
            }
        }
        Ok(())
    }

    /// Allocates the page tables of `[va, end)`, outside the table lock.
    pub(crate) fn reserve_tables(&self, va: u64, end: u64) -> Result {
        loop {
            let Some(missing) = self.pt.lock().first_missing(va, end) else {
                return Ok(());
            };
            let mut mid = Some(new_table()?);
            let mut leaf = Some(new_table()?);
            self.pt.lock().add_tables(missing, &mut mid, &mut leaf);
        }
    }

    /// Removes the binding that starts at `va`, of `size` bytes.
    pub(crate) fn unbind(&self, va: u64, size: u64) -> Result {
        let mut bindings = self.bindings.lock();
        match bindings.get(&va) {
            None => return Err(ENOENT),
            Some(b) if b.size != size => return Err(EINVAL),
            Some(_) => {}
        }
        let Some(b) = bindings.remove(&va) else {
            return Err(ENOENT);
        };
        b.obj.remove_mapping(self, &b);
        Ok(())
    }

    /// Removes every binding: the file is closing. Jobs still running on
    /// this VM fault from now on.
    pub(crate) fn teardown(&self) {
        let mut bindings = self.bindings.lock();
        while let Some(c) = bindings.cursor_front() {
            let (_, node) = c.remove_current();
            let (_, b) = node.to_key_value();
            b.obj.remove_mapping(self, &b);
        }
    }

    /// Number of bindings of `bo` in this VM.
    pub(crate) fn bindings_of(&self, bo: &Bo) -> u64 {
        self.bindings
            .lock()
            .values()
            .filter(|b| core::ptr::eq::<Bo>(&**b.obj, bo))
            .count() as u64
    }

    /// Resolves a GPU page fault at `va`: finds the binding, acquires the
    /// object's folio (which may sleep and lock it) and fills the page
    /// table entries of the folio's pages in this binding. `job` is the
    /// fence of the job that faulted: the object is busy until it signals.
    pub(crate) fn fault(
        self: &Arc<Self>,
        va: u64,
        write: bool,
        job: Option<&ARef<kernel::dma_fence::Fence>>,
    ) -> core::result::Result<(), Fault> {
        let fault = |err| Fault { addr: va, err };
        let bindings = self.bindings.lock();
        let b = bindings
            .values()
            .find(|b| va >= b.va && va < b.va + b.size)
            .ok_or(fault(EFAULT))?;
        if write && b.readonly {
            return Err(fault(EFAULT));
        }
        let index = ((b.bo_offset + (va - b.va)) / PAGE) as usize;
        b.obj.populate(self, b, index, job).map_err(fault)
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // Objects point back at the VM through their mappings: remove them
        // (normally done already when the file closed).
        self.teardown();
    }
}

/// A GPU page fault that could not be resolved.
pub(crate) struct Fault {
    pub(crate) addr: u64,
    pub(crate) err: Error,
}
