// SPDX-License-Identifier: GPL-2.0

//! The buddy allocator of GPU memory (drm_buddy).
//!
//! A [`Buddy`] manages a range of device memory, VRAM say, in power-of-two
//! blocks of at least its chunk size; [`Buddy::alloc`] gives an
//! [`Allocation`], a list of blocks (one if contiguous) that goes back to
//! the allocator when it is dropped. amdgpu, i915 and xe manage their VRAM
//! with it under TTM's resource managers.
//!
//! The C allocator has no lock of its own: here it sits behind a mutex,
//! which allocating and freeing take, so that no safe code can use it from
//! two threads at once. An allocation holds a reference to its allocator,
//! which thus outlives every allocation (and `gpu_buddy_fini()` always finds
//! everything free). Freeing takes the mutex: an allocation is not to be
//! dropped in atomic context.
//!
//! In this tree the allocator itself is `gpu_buddy` (`GPU_BUDDY`, built in);
//! `drm_buddy` keeps the DRM printer output ([`Buddy::print`]). A driver
//! using this module selects `RUST_DRM_BUDDY`.
//!
//! C headers: [`include/linux/gpu_buddy.h`](srctree/include/linux/gpu_buddy.h),
//! [`include/drm/drm_buddy.h`](srctree/include/drm/drm_buddy.h).
//!
//! # Examples
//!
//! Allocating and freeing:
//!
//! ```
//! use kernel::drm::buddy::{Buddy, Request};
//! const KIB: u64 = 1 << 10;
//! const MIB: u64 = 1 << 20;
//!
//! let buddy = Buddy::new(16 * MIB, 4 * KIB)?;
//! assert_eq!((buddy.size(), buddy.chunk_size()), (16 * MIB, 4 * KIB));
//! assert_eq!(buddy.avail(), 16 * MIB);
//!
//! let a = buddy.alloc(&Request::new(MIB))?;
//! assert_eq!(a.size(), MIB);
//! assert_eq!(a.blocks().map(|b| b.size()).sum::<u64>(), MIB);
//! assert!(a.blocks().all(|b| b.offset() % (4 * KIB) == 0 && b.end() <= 16 * MIB));
//! assert_eq!(buddy.avail(), 15 * MIB);
//!
//! // Freeing gives the memory back.
//! drop(a);
//! assert_eq!(buddy.avail(), 16 * MIB);
//! # Ok::<(), Error>(())
//! ```
//!
//! Exhaustion is `ENOSPC`, and freeing makes room again:
//!
//! ```
//! use kernel::drm::buddy::{Buddy, Request};
//! const KIB: u64 = 1 << 10;
//! const MIB: u64 = 1 << 20;
//!
//! let buddy = Buddy::new(MIB, 4 * KIB)?;
//! let all = buddy.alloc(&Request::new(MIB - 8 * KIB))?;
//! let last = buddy.alloc(&Request::new(8 * KIB))?;
//! assert_eq!(buddy.avail(), 0);
//! assert_eq!(buddy.alloc(&Request::new(4 * KIB)).err(), Some(ENOSPC));
//! // A failed allocation changes nothing.
//! assert_eq!(buddy.avail(), 0);
//!
//! drop(last);
//! assert_eq!(buddy.avail(), 8 * KIB);
//! let again = buddy.alloc(&Request::new(8 * KIB))?;
//! assert_eq!(again.size(), 8 * KIB);
//! drop((all, again));
//! assert_eq!(buddy.avail(), MIB);
//! # Ok::<(), Error>(())
//! ```
//!
//! Requests the allocator cannot serve as asked are `EINVAL`:
//!
//! ```
//! use kernel::drm::buddy::{Buddy, Request};
//! const KIB: u64 = 1 << 10;
//! const MIB: u64 = 1 << 20;
//!
//! // A chunk below 4 KiB, or not a power of two; a size below the chunk.
//! assert_eq!(Buddy::new(MIB, 2 * KIB).err(), Some(EINVAL));
//! assert_eq!(Buddy::new(MIB, 12 * KIB).err(), Some(EINVAL));
//! assert_eq!(Buddy::new(2 * KIB, 4 * KIB).err(), Some(EINVAL));
//!
//! let buddy = Buddy::new(MIB, 4 * KIB)?;
//! for bad in [
//!     Request::new(0),
//!     Request::new(2 * KIB),
//!     Request::new(4 * KIB + 1),
//!     Request::new(2 * MIB),
//!     Request::new(8 * KIB).min_block_size(12 * KIB),
//!     Request::new(8 * KIB).range(0, 2 * MIB),
//!     Request::new(8 * KIB).range(8 * KIB, 8 * KIB),
//!     Request::new(8 * KIB).range(MIB, 0),
//! ] {
//!     assert_eq!(buddy.alloc(&bad).err(), Some(EINVAL));
//! }
//! assert_eq!(buddy.avail(), MIB);
//! # Ok::<(), Error>(())
//! ```
//!
//! Range restriction, top-down, minimum block size and contiguity:
//!
//! ```
//! use kernel::drm::buddy::{Buddy, Request};
//! const KIB: u64 = 1 << 10;
//! const MIB: u64 = 1 << 20;
//!
//! let buddy = Buddy::new(16 * MIB, 4 * KIB)?;
//!
//! // Every block inside [3 MiB, 5 MiB).
//! let r = buddy.alloc(&Request::new(MIB + 64 * KIB).range(3 * MIB, 5 * MIB))?;
//! assert_eq!(r.size(), MIB + 64 * KIB);
//! assert!(r.blocks().all(|b| b.offset() >= 3 * MIB && b.end() <= 5 * MIB));
//! // The range holds 2 MiB: 1 MiB more does not fit in what is left of it.
//! assert_eq!(buddy.alloc(&Request::new(MIB).range(3 * MIB, 5 * MIB)).err(), Some(ENOSPC));
//!
//! // Top-down: from the end of the memory.
//! let t = buddy.alloc(&Request::new(MIB).top_down())?;
//! assert_eq!(t.blocks().map(|b| b.end()).max(), Some(16 * MIB));
//!
//! // A minimum block size: blocks of at least, and aligned to, 64 KiB.
//! let m = buddy.alloc(&Request::new(192 * KIB).min_block_size(64 * KIB))?;
//! assert!(m.blocks().all(|b| b.size() >= 64 * KIB && b.offset() % (64 * KIB) == 0));
//! drop((r, t, m));
//! assert_eq!(buddy.avail(), 16 * MIB);
//!
//! // Take [0, 4M) and [8M, 12M): 8 MiB are free, in two 4 MiB pieces.
//! let lo = buddy.alloc(&Request::new(4 * MIB).range(0, 4 * MIB))?;
//! let hi = buddy.alloc(&Request::new(4 * MIB).range(8 * MIB, 12 * MIB))?;
//! assert_eq!(buddy.avail(), 8 * MIB);
//! // 8 MiB in one piece: there is none.
//! let contiguous = Request::new(8 * MIB).contiguous();
//! assert_eq!(buddy.alloc(&contiguous).err(), Some(ENOSPC));
//! assert_eq!(buddy.avail(), 8 * MIB);
//! // 8 MiB in pieces: there are two.
//! let pieces = buddy.alloc(&Request::new(8 * MIB))?;
//! assert_eq!(pieces.blocks().count(), 2);
//! drop((lo, pieces));
//!
//! // A contiguous allocation is one extent even when its size is not a
//! // power of two (the allocator trims the block it rounded up to).
//! let c = buddy.alloc(&Request::new(12 * KIB).contiguous())?;
//! assert_eq!(c.size(), 12 * KIB);
//! let mut extents = KVec::new();
//! for b in c.blocks() {
//!     extents.push((b.offset(), b.end()), GFP_KERNEL)?;
//! }
//! extents.sort_unstable();
//! assert!(extents.windows(2).all(|w| w[0].1 == w[1].0));
//! assert_eq!(extents[extents.len() - 1].1 - extents[0].0, 12 * KIB);
//! drop((c, hi));
//! assert_eq!(buddy.avail(), 16 * MIB);
//! # Ok::<(), Error>(())
//! ```
//!
//! Cleared memory: an allocation whose contents were zeroed is freed as
//! such, and a request for cleared memory prefers it:
//!
//! ```
//! use kernel::drm::buddy::{Buddy, Request};
//! const KIB: u64 = 1 << 10;
//! const MIB: u64 = 1 << 20;
//!
//! let buddy = Buddy::new(MIB, 64 * KIB)?;
//! assert_eq!(buddy.clear_avail(), 0);
//! let mut a = buddy.alloc(&Request::new(64 * KIB))?;
//! assert!(a.blocks().all(|b| !b.is_clear()));
//! let at = a.blocks().next().map(|b| b.offset());
//! // (The device zeroed it.)
//! a.mark_cleared();
//! drop(a);
//! assert_eq!(buddy.clear_avail(), 64 * KIB);
//!
//! let c = buddy.alloc(&Request::new(64 * KIB).clear())?;
//! assert!(c.blocks().all(|b| b.is_clear()));
//! assert_eq!(c.blocks().next().map(|b| b.offset()), at);
//! assert_eq!(buddy.clear_avail(), 0);
//! // Freed without `mark_cleared()`: dirty again.
//! drop(c);
//! assert_eq!((buddy.avail(), buddy.clear_avail()), (MIB, 0));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings, drm,
    error::{code::EINVAL, to_result, Result},
    ffi::{c_uint, c_ulong},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    types::Opaque,
};
use core::{marker::PhantomData, ptr};

/// An allocation request for [`Buddy::alloc`]: a size and the constraints
/// on where the blocks may be.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    size: u64,
    min_block_size: Option<u64>,
    range: Option<(u64, u64)>,
    /// `GPU_BUDDY_*_ALLOCATION`.
    flags: c_ulong,
}

impl Request {
    /// `size` bytes (a multiple of the allocator's chunk size), in blocks
    /// of at least the chunk size, anywhere.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            min_block_size: None,
            range: None,
            flags: 0,
        }
    }

    /// Blocks of at least `bytes` (a power of two, at least the chunk size),
    /// each aligned to it; the size is rounded up to a multiple of it.
    pub fn min_block_size(self, bytes: u64) -> Self {
        Self {
            min_block_size: Some(bytes),
            ..self
        }
    }

    fn with_flag(self, flag: c_ulong) -> Self {
        Self {
            flags: self.flags | flag,
            ..self
        }
    }

    /// Every block inside `[start, end)` (a non-empty range, in the
    /// allocator's memory, bounds multiples of the chunk size). A request
    /// whose size is the range's is for exactly that range.
    pub fn range(self, start: u64, end: u64) -> Self {
        Self {
            range: Some((start, end)),
            ..self.with_flag(bindings::GPU_BUDDY_RANGE_ALLOCATION)
        }
    }

    /// Blocks from the top of the memory down. (With a range, blocks come
    /// from the range's bottom up either way.)
    pub fn top_down(self) -> Self {
        self.with_flag(bindings::GPU_BUDDY_TOPDOWN_ALLOCATION)
    }

    /// One extent of memory (in one or more blocks: the allocator trims a
    /// size that is not a power of two).
    pub fn contiguous(self) -> Self {
        self.with_flag(bindings::GPU_BUDDY_CONTIGUOUS_ALLOCATION)
    }

    /// Blocks freed as cleared ([`Allocation::mark_cleared`]) first; others
    /// when there are not enough of those.
    pub fn clear(self) -> Self {
        self.with_flag(bindings::GPU_BUDDY_CLEAR_ALLOCATION)
    }
}

/// The C allocator, initialised; finished when dropped.
///
/// # Invariants
///
/// `0` was initialised by `gpu_buddy_init()`, and is finished only by
/// `drop`. It is boxed: its address is never used by the C code, but
/// nothing promises that it may move.
struct Raw(KBox<Opaque<bindings::gpu_buddy>>);

// SAFETY: the allocator is plain memory that its owner may use, and finish,
// from any thread.
unsafe impl Send for Raw {}

impl Raw {
    fn as_ptr(&self) -> *mut bindings::gpu_buddy {
        self.0.get()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: initialised (type invariant), and never used again. Every
        // allocation holds a reference to the `Inner` owning `self`, so all
        // of them are freed: `gpu_buddy_fini()` finds everything free.
        unsafe { bindings::gpu_buddy_fini(self.as_ptr()) };
    }
}

/// The allocator shared by its [`Buddy`] handles and its allocations.
#[pin_data]
struct Inner {
    /// The C allocator, used only under this lock.
    #[pin]
    raw: Mutex<Raw>,
    /// `mm->size` and `mm->chunk_size`, which never change after
    /// `gpu_buddy_init()`.
    size: u64,
    chunk_size: u64,
}

/// A buddy allocator of `size` bytes of device memory, in offsets from 0.
///
/// Cloning gives another handle to the same allocator. The allocator goes
/// when the last handle and the last [`Allocation`] from it are dropped.
#[derive(Clone)]
pub struct Buddy(Arc<Inner>);

impl Buddy {
    /// An allocator of `size` bytes (rounded down to a multiple of
    /// `chunk_size`) in blocks of at least `chunk_size` (a power of two of
    /// at least 4 KiB, and at most `size`), all free.
    pub fn new(size: u64, chunk_size: u64) -> Result<Self> {
        let boxed = KBox::new(Opaque::<bindings::gpu_buddy>::uninit(), GFP_KERNEL)?;
        // SAFETY: `boxed` is memory for a `struct gpu_buddy`, which
        // `gpu_buddy_init()` initialises; it validates `size` and
        // `chunk_size` (EINVAL), and leaves nothing to free when it fails.
        to_result(unsafe { bindings::gpu_buddy_init(boxed.get(), size, chunk_size) })?;
        // INVARIANT: initialised just above.
        let raw = Raw(boxed);
        // SAFETY: initialised; `size` and `chunk_size` are set by the
        // initialisation and never change after it.
        let (size, chunk_size) = unsafe { ((*raw.as_ptr()).size, (*raw.as_ptr()).chunk_size) };
        let inner = Arc::pin_init(
            pin_init!(Inner {
                raw <- new_mutex!(raw, "drm::buddy::Buddy::raw"),
                size,
                chunk_size,
            }),
            GFP_KERNEL,
        )?;
        Ok(Self(inner))
    }

    /// The memory managed, in bytes.
    pub fn size(&self) -> u64 {
        self.0.size
    }

    /// The smallest block, in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.0.chunk_size
    }

    /// The memory free, in bytes.
    pub fn avail(&self) -> u64 {
        let raw = self.0.raw.lock();
        // SAFETY: initialised (invariant of `Raw`); `avail` changes only
        // under the lock, which is held.
        unsafe { (*raw.as_ptr()).avail }
    }

    /// The memory free and cleared, in bytes: freed by allocations marked
    /// with [`Allocation::mark_cleared`], and not allocated since.
    pub fn clear_avail(&self) -> u64 {
        let raw = self.0.raw.lock();
        // SAFETY: as in `avail`.
        unsafe { (*raw.as_ptr()).clear_avail }
    }

    /// Allocates blocks as `req` asks: `EINVAL` for a request the
    /// allocator cannot serve (see [`Request`]'s methods), `ENOSPC` when
    /// the free memory does not have them. A failed allocation changes
    /// nothing.
    pub fn alloc(&self, req: &Request) -> Result<Allocation> {
        let (start, end) = match req.range {
            // An empty range would reach the C code as `end - 1` below
            // `start`.
            Some((start, end)) if start >= end => return Err(EINVAL),
            Some(range) => range,
            None => (0, self.0.size),
        };
        let min_block_size = req.min_block_size.unwrap_or(self.0.chunk_size);
        let head = KBox::new(Opaque::<bindings::list_head>::uninit(), GFP_KERNEL)?;
        let list = head.get();
        // SAFETY: `list` is valid memory for a list head; an empty list
        // points to itself (`INIT_LIST_HEAD()`).
        unsafe {
            (*list).next = list;
            (*list).prev = list;
        }
        let raw = self.0.raw.lock();
        // SAFETY: the allocator is initialised (invariant of `Raw`) and
        // its lock is held. `list` is an empty list head: the C code adds
        // the blocks to it, and on failure leaves it empty. (It must be
        // empty: a failing contiguous allocation frees what the list
        // holds.) The C code validates every parameter against the
        // allocator (EINVAL), except the empty range, refused above.
        to_result(unsafe {
            bindings::gpu_buddy_alloc_blocks(
                raw.as_ptr(),
                start,
                end,
                req.size,
                min_block_size,
                list,
                req.flags,
            )
        })?;
        drop(raw);
        // INVARIANT: the blocks were allocated from `self.0` onto `head`.
        let mut this = Allocation {
            buddy: self.0.clone(),
            head,
            size: 0,
            cleared: false,
        };
        this.size = this.blocks().map(|b| b.size).sum();
        Ok(this)
    }

    /// Prints the allocator's state: its size, chunk size, free memory and
    /// the free blocks of each order (`drm_buddy_print()`).
    pub fn print(&self, p: &drm::Printer) {
        let raw = self.0.raw.lock();
        // SAFETY: the allocator is initialised and locked; the printer is
        // live (invariant of `Printer`).
        unsafe { bindings::drm_buddy_print(raw.as_ptr(), p.0) };
    }
}

/// Blocks allocated from a [`Buddy`]; freed when dropped.
///
/// # Invariants
///
/// `head` is the head of a list, linked through `gpu_buddy_block::link`,
/// of blocks allocated from `buddy` and owned by this value; it is boxed
/// because the list points to it. The blocks' offsets and orders do not
/// change while they are allocated. `size` is the sum of their sizes.
pub struct Allocation {
    buddy: Arc<Inner>,
    head: KBox<Opaque<bindings::list_head>>,
    size: u64,
    cleared: bool,
}

// SAFETY: the blocks are owned by the allocation and may be freed from any
// thread (under the allocator's lock).
unsafe impl Send for Allocation {}
// SAFETY: `&Allocation` only reads the list and the blocks' offsets and
// orders, which the allocator does not change while the blocks are
// allocated.
unsafe impl Sync for Allocation {}

impl Allocation {
    /// The blocks, in the allocator's order.
    pub fn blocks(&self) -> Blocks<'_> {
        let head = self.head.get();
        Blocks {
            head,
            // SAFETY: `head` is a list head (type invariant).
            next: unsafe { (*head).next },
            chunk_size: self.buddy.chunk_size,
            _allocation: PhantomData,
        }
    }

    /// The memory allocated, in bytes: the size asked for, rounded up to a
    /// multiple of the minimum block size if not contiguous.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Says that the memory is now cleared (zeroed by the device), so that
    /// freeing it gives it to later [`Request::clear`] requests. Without
    /// it, freed memory is dirty.
    pub fn mark_cleared(&mut self) {
        self.cleared = true;
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let flags = if self.cleared {
            // `gpu_buddy_free_list()` takes its flags as an `unsigned int`.
            bindings::GPU_BUDDY_CLEARED as c_uint
        } else {
            0
        };
        let raw = self.buddy.raw.lock();
        // SAFETY: the blocks on `head` were allocated from this allocator
        // and are owned by `self` (type invariant); they are given back
        // under its lock, and never used again.
        unsafe { bindings::gpu_buddy_free_list(raw.as_ptr(), self.head.get(), flags) };
    }
}

/// One block of an [`Allocation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    offset: u64,
    size: u64,
    clear: bool,
}

impl Block {
    /// Where the block starts, in bytes from the start of the memory.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The block's size in bytes: a power of two, at least the chunk size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the block ends: `offset() + size()`.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    /// Whether the block was cleared memory when it was allocated.
    pub fn is_clear(&self) -> bool {
        self.clear
    }
}

/// An iterator over the blocks of an [`Allocation`].
pub struct Blocks<'a> {
    head: *const bindings::list_head,
    next: *mut bindings::list_head,
    chunk_size: u64,
    _allocation: PhantomData<&'a Allocation>,
}

impl Iterator for Blocks<'_> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        if ptr::eq(self.next, self.head) {
            return None;
        }
        // SAFETY: `next` is an entry of the allocation's list, which lives
        // (unchanged) while it is borrowed: the `link` of an allocated
        // block.
        let block = unsafe {
            crate::container_of!(self.next, bindings::gpu_buddy_block, __bindgen_anon_1.link)
                .cast_mut()
        };
        // SAFETY: `block` is allocated and owned by the allocation, whose
        // list links it (its `link` is the allocation's); its header does
        // not change while it is allocated.
        unsafe {
            self.next = (*self.next).next;
            let order = bindings::gpu_buddy_block_order(block);
            Some(Block {
                offset: bindings::gpu_buddy_block_offset(block),
                size: self.chunk_size << order,
                clear: bindings::gpu_buddy_block_is_clear(block),
            })
        }
    }
}
