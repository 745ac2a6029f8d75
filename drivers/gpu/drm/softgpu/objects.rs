// SPDX-License-Identifier: GPL-2.0

//! The device's objects: the list its shrinker and debugfs walk.
//!
//! Each object is in the list from creation until its data is dropped (by
//! the GEM free path, after its last reference is gone). Walkers take
//! references with [`GemObject::try_get`] under the list lock, which the
//! object's `Drop` also takes to remove it, so an object in the list is
//! always valid memory; one whose last reference is going is skipped.
//!
//! The shrinker gives back what the device holds but does not need:
//! - objects userspace marked `DONTNEED` that are idle and not bound are
//!   purged: their pages are dropped from the page cache and swap;
//! - idle gemfs objects give up their folios: the device page table entries
//!   go (as for migration) and the gemfs holds are dropped, so reclaim can
//!   swap the folios out like any shmem page. The next GPU access faults
//!   them back in.
//!
//! Pinned (baseline) objects keep their pages while bound, like today's
//! drivers; unbound, they hold none.

use crate::bo::GemObject;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::{
    drm, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    shrinker::{Scan, ShrinkControl, Shrinker},
    sync::{Arc, SpinLock},
    task::cond_resched,
    types::ARef,
};

/// How many objects a walk references at a time, outside the list lock.
const BATCH: usize = 16;

/// Objects referenced by a walk: on the stack, as the shrinker may not
/// allocate.
type Batch = [Option<ARef<GemObject>>; BATCH];

/// A pointer to a listed object, and whether it is an import.
struct Listed(*const GemObject, bool);

// SAFETY: only dereferenced under the list lock, while the object's `Drop`
// cannot have freed it (see the module documentation); GEM objects may be
// referenced from any thread.
unsafe impl Send for Listed {}

struct List {
    by_id: RBTree<u64, Listed>,
    next_id: u64,
    /// Where the next shrinker scan starts: scans go round the list.
    scan_from: u64,
}

/// The device's objects, and what the shrinker may take back from them.
#[pin_data]
pub(crate) struct Objects {
    #[pin]
    list: SpinLock<List>,
    /// Pages of gemfs objects that device page tables point into.
    pub(crate) held_pages: AtomicUsize,
    /// Pages of `DONTNEED` objects not purged yet.
    pub(crate) purgeable_pages: AtomicUsize,
    /// Shrinker scans, and pages it released from the device (for reclaim
    /// to page out, not freed) and purged (freed).
    scans: AtomicU64,
    released_pages: AtomicU64,
    purged_pages: AtomicU64,
}

impl Objects {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                list <- new_spinlock!(
                    List {
                        by_id: RBTree::new(),
                        next_id: 1,
                        scan_from: 0,
                    },
                    "softgpu_objects"
                ),
                held_pages: AtomicUsize::new(0),
                purgeable_pages: AtomicUsize::new(0),
                scans: AtomicU64::new(0),
                released_pages: AtomicU64::new(0),
                purged_pages: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// A new object id, never reused.
    pub(crate) fn new_id(&self) -> u64 {
        let mut l = self.list.lock();
        let id = l.next_id;
        l.next_id += 1;
        id
    }

    /// Lists `obj` under `id`.
    pub(crate) fn insert(&self, id: u64, obj: &GemObject) -> Result {
        let node = RBTreeNode::new(
            id,
            Listed(core::ptr::from_ref(obj), obj.is_import()),
            GFP_KERNEL,
        )?;
        self.list.lock().by_id.insert(node);
        Ok(())
    }

    /// Unlists object `id`: called from its `Drop`.
    pub(crate) fn remove(&self, id: u64) {
        let node = self.list.lock().by_id.remove_node(&id);
        drop(node);
    }

    /// References up to [`BATCH`] live objects with ids in `[from, end)`
    /// into `out` (which must be empty), but for imports if `!imports`;
    /// returns the id to continue from, or `None` when the range is done.
    fn batch(&self, from: u64, end: u64, out: &mut Batch, imports: bool) -> Option<u64> {
        let mut l = self.list.lock();
        let mut cursor = l.by_id.cursor_lower_bound(&from);
        let mut slots = out.iter_mut();
        while let Some(c) = cursor {
            let (&id, obj) = c.current();
            if id >= end {
                return None;
            }
            if obj.1 && !imports {
                cursor = c.move_next();
                continue;
            }
            let Some(slot) = slots.next() else {
                return Some(id);
            };
            // SAFETY: listed, under the list lock (module documentation).
            *slot = unsafe { GemObject::try_get(obj.0) };
            cursor = c.move_next();
        }
        None
    }

    /// Calls `f` on every live object, a batch at a time, without the list
    /// lock held (so `f` may sleep and allocate).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&GemObject) -> Result) -> Result {
        let mut objs = Batch::default();
        let mut from = Some(0);
        while let Some(start) = from {
            from = self.batch(start, u64::MAX, &mut objs, true);
            for o in objs.iter_mut().filter_map(Option::take) {
                f(&o)?;
            }
        }
        Ok(())
    }

    /// debugfs `shrinker`.
    pub(crate) fn show_shrinker(&self, p: &drm::Printer) {
        p.print(format_args!(
            "held_pages: {}\npurgeable_pages: {}\nscans: {}\nreleased_pages: {}\npurged_pages: {}\n",
            self.held_pages.load(Ordering::Relaxed),
            self.purgeable_pages.load(Ordering::Relaxed),
            self.scans.load(Ordering::Relaxed),
            self.released_pages.load(Ordering::Relaxed),
            self.purged_pages.load(Ordering::Relaxed),
        ));
    }
}

impl Shrinker for Objects {
    fn count(&self, _sc: &ShrinkControl<'_>) -> usize {
        self.held_pages.load(Ordering::Relaxed) + self.purgeable_pages.load(Ordering::Relaxed)
    }

    fn scan(&self, sc: &mut ShrinkControl<'_>) -> Scan {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let want = sc.nr_to_scan();
        let purge = sc.allows_fs();
        let (mut released, mut purged) = (0, 0);
        let mut objs = Batch::default();
        // Once round the list at most, from where the last scan stopped.
        let start = self.list.lock().scan_from;
        let mut resume = start;
        'round: for (lo, hi) in [(start, u64::MAX), (0, start)] {
            let mut from = Some(lo);
            while let Some(f) = from {
                if released + purged >= want {
                    resume = f;
                    break 'round;
                }
                // Imports are not ours to shrink; and the last reference
                // to one must not go in here: freeing it unmaps and
                // detaches its attachment under the buffer's reservation
                // lock, which reclaim may not take (it nests outside
                // fs_reclaim).
                from = self.batch(f, hi, &mut objs, false);
                // The last reference may go in here: freeing an object
                // that is not an import only takes spinlocks and defers
                // its final fput.
                for o in objs.iter_mut().filter_map(Option::take) {
                    let (r, p) = o.shrink(&o, purge);
                    released += r;
                    purged += p;
                }
                // Outside the list lock: a scan may go round many objects.
                cond_resched();
            }
        }
        self.list.lock().scan_from = resume;
        self.released_pages
            .fetch_add(released as u64, Ordering::Relaxed);
        self.purged_pages
            .fetch_add(purged as u64, Ordering::Relaxed);
        // Only purged pages are freed. Released ones are still in memory,
        // ordinary shmem folios that reclaim may now page out (and counts
        // there when it does); counting them here too would tell reclaim
        // it freed memory it did not, and make `drop_slab()` go round
        // again for nothing. They still count as scanned: `count()` offers
        // them, and giving them up is this shrinker's work.
        Scan::Freed(purged)
    }
}
