// SPDX-License-Identifier: GPL-2.0

//! Folios: the mm's unit of memory for the page cache and anonymous memory.
//!
//! A folio is a physically contiguous, naturally aligned, power-of-two set of
//! pages that the mm manages as one: one reference count, one lock, one
//! mapping and index.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h) and
//! [`include/linux/pagemap.h`](srctree/include/linux/pagemap.h).

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    error::{code::EINVAL, Result},
    page::PAGE_SIZE,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::ptr::NonNull;

/// A folio.
///
/// Always used behind a reference: `&Folio` borrows a reference somebody
/// else holds, [`ARef<Folio>`] owns one.
///
/// # Invariants
///
/// For as long as a `&Folio` exists, it points to a valid `struct folio`
/// whose reference count is not zero.
#[repr(transparent)]
pub struct Folio(Opaque<bindings::folio>);

// SAFETY: A folio's state is managed by the mm with atomics and the folio
// lock; nothing ties it to one thread.
unsafe impl Send for Folio {}
// SAFETY: All methods taking `&self` are safe to call from several threads:
// they read atomically updated state or take the folio lock.
unsafe impl Sync for Folio {}

// SAFETY: `folio_get` and `folio_put` are the folio's reference counting;
// the type invariant guarantees a nonzero count while `&self` exists.
unsafe impl AlwaysRefCounted for Folio {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the folio is valid and referenced.
        unsafe { bindings::folio_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns one reference, which it gives up here.
        unsafe { bindings::folio_put(obj.cast().as_ptr()) };
    }
}

impl Folio {
    /// Allocates a folio of `2^order` pages, not in any mapping.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::folio::Folio;
    /// use kernel::page::PAGE_SIZE;
    ///
    /// let folio = Folio::alloc(GFP_KERNEL | __GFP_ZERO, 2)?;
    /// assert_eq!(folio.nr_pages(), 4);
    /// assert_eq!(folio.size(), 4 * PAGE_SIZE);
    /// assert!(folio.is_large());
    /// assert_eq!(folio.ref_count(), 1);
    /// let other = kernel::types::ARef::clone(&folio);
    /// assert_eq!(folio.ref_count(), 2);
    /// drop(other);
    /// assert_eq!(folio.ref_count(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn alloc(flags: Flags, order: u32) -> Result<ARef<Self>, AllocError> {
        // SAFETY: `folio_alloc` may sleep as `flags` allow; any flags and
        // order are accepted (a too large order fails the allocation).
        let ptr = unsafe { bindings::folio_alloc(flags.as_raw(), order) };
        let ptr = NonNull::new(ptr.cast::<Self>()).ok_or(AllocError)?;
        // SAFETY: `folio_alloc` returns a folio with one reference, which
        // the `ARef` now owns.
        Ok(unsafe { ARef::from_raw(ptr) })
    }

    /// Borrows a folio from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid folio whose reference count stays above
    /// zero for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::folio) -> &'a Self {
        // SAFETY: `Folio` is a transparent wrapper; validity and lifetime
        // are the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw `struct folio` pointer.
    pub fn as_raw(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// The page frame number of the folio's first page.
    pub fn pfn(&self) -> usize {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_pfn(self.as_raw()) as usize }
    }

    /// The number of pages in the folio.
    pub fn nr_pages(&self) -> usize {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_nr_pages(self.as_raw()) as usize }
    }

    /// The folio's order: it has `2^order` pages.
    pub fn order(&self) -> u32 {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_order(self.as_raw()) }
    }

    /// The folio's size in bytes.
    pub fn size(&self) -> usize {
        self.nr_pages() * PAGE_SIZE
    }

    /// Whether the folio has more than one page.
    pub fn is_large(&self) -> bool {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_test_large(self.as_raw()) }
    }

    /// The NUMA node the folio's memory is on.
    pub fn nid(&self) -> i32 {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_nid(self.as_raw()) }
    }

    /// The folio's index in its mapping, in pages.
    ///
    /// Stable while the folio is locked ([`LockedFolio`]) or known to stay
    /// in its mapping; otherwise a hint.
    pub fn index(&self) -> usize {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_index(self.as_raw()) as usize }
    }

    /// The current reference count (a snapshot, for diagnostics and tests).
    pub fn ref_count(&self) -> i32 {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_ref_count(self.as_raw()) }
    }

    /// Whether somebody holds the folio lock.
    pub fn is_locked(&self) -> bool {
        // SAFETY: By the type invariant the folio is valid.
        unsafe { bindings::folio_test_locked(self.as_raw()) }
    }

    /// Takes the folio lock, sleeping until it is free.
    pub fn lock(&self) -> LockedFolio<'_> {
        // SAFETY: By the type invariant the folio is valid; we may sleep.
        unsafe { bindings::folio_lock(self.as_raw()) };
        // INVARIANT: we took the lock, the guard releases it.
        LockedFolio {
            folio: self,
            owned: true,
        }
    }

    /// Takes the folio lock if it is free.
    pub fn try_lock(&self) -> Option<LockedFolio<'_>> {
        // SAFETY: By the type invariant the folio is valid.
        if unsafe { bindings::folio_trylock(self.as_raw()) } {
            // INVARIANT: we took the lock, the guard releases it.
            Some(LockedFolio {
                folio: self,
                owned: true,
            })
        } else {
            None
        }
    }

    /// Copies bytes out of the folio, from byte `offset` on.
    ///
    /// Fails with `EINVAL` if the range is not within the folio. The folio
    /// is shared memory: bytes written concurrently through another mapping
    /// may or may not be seen, but reading them is not undefined behaviour
    /// (the copy goes through raw pointers, never a Rust reference).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::folio::Folio;
    /// use kernel::page::PAGE_SIZE;
    ///
    /// let folio = Folio::alloc(GFP_KERNEL | __GFP_ZERO, 1)?;
    /// // A write that straddles the two pages.
    /// folio.write(PAGE_SIZE - 2, &[1, 2, 3, 4])?;
    /// let mut buf = [0u8; 6];
    /// folio.read(PAGE_SIZE - 3, &mut buf)?;
    /// assert_eq!(buf, [0, 1, 2, 3, 4, 0]);
    /// assert_eq!(folio.write(2 * PAGE_SIZE - 1, &[0, 0]), Err(EINVAL));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result {
        let len = out.len();
        let dst = out.as_mut_ptr();
        self.for_each_chunk(offset, len, |map, done, n| {
            // SAFETY: `map` is `n` mapped bytes of the folio and `dst + done`
            // has room for `n` more: `done + n <= len`.
            unsafe { core::ptr::copy_nonoverlapping(map, dst.add(done), n) }
        })
    }

    /// Copies `data` into the folio at byte `offset`.
    ///
    /// Fails with `EINVAL` if the range is not within the folio. The caller
    /// is responsible for marking the folio dirty when it belongs to a
    /// mapping.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result {
        let src = data.as_ptr();
        self.for_each_chunk(offset, data.len(), |map, done, n| {
            // SAFETY: `map` is `n` mapped, writable bytes of the folio and
            // `src + done` has `n` bytes left: `done + n <= data.len()`.
            unsafe { core::ptr::copy_nonoverlapping(src.add(done), map, n) }
        })
    }

    /// Atomically adds `value` to the naturally aligned 64-bit integer at
    /// byte `offset`, `times` times, and returns its value after the last addition.
    ///
    /// Each addition is one atomic read-modify-write, so concurrent adders
    /// through any mapping of the folio (a CPU thread with the file mapped,
    /// another device) lose no update. `EINVAL` if `offset` is misaligned or
    /// out of the folio.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::folio::Folio;
    ///
    /// let folio = Folio::alloc(GFP_KERNEL | __GFP_ZERO, 0)?;
    /// assert_eq!(folio.atomic_add_u64(8, 5, 3)?, 15);
    /// let mut buf = [0u8; 8];
    /// folio.read(8, &mut buf)?;
    /// assert_eq!(u64::from_ne_bytes(buf), 15);
    /// assert_eq!(folio.atomic_add_u64(4, 1, 1), Err(EINVAL));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn atomic_add_u64(&self, offset: usize, value: u64, times: u64) -> Result<u64> {
        if offset % 8 != 0 || offset + 8 > self.size() {
            return Err(EINVAL);
        }
        let mut last = 0;
        // A naturally aligned u64 never straddles pages: one chunk.
        self.for_each_chunk(offset, 8, |map, _, _| {
            // SAFETY: `map` is 8 mapped bytes of the folio, 8-byte aligned
            // (the page mapping is page aligned and `offset % 8 == 0`).
            // Every access to it from Rust is atomic; C and userspace
            // accesses are outside Rust's model, as for any shared page.
            let a = unsafe { core::sync::atomic::AtomicU64::from_ptr(map.cast()) };
            for _ in 0..times {
                last = a.fetch_add(value, core::sync::atomic::Ordering::Relaxed);
            }
        })?;
        Ok(last.wrapping_add(value))
    }

    /// Borrows the folio that contains page frame `pfn`.
    ///
    /// # Safety
    ///
    /// The caller must hold a reference to that folio for `'a` (a device
    /// page table entry that exists only while its owner holds the folio is
    /// such a reference).
    pub unsafe fn from_pfn<'a>(pfn: usize) -> &'a Self {
        // SAFETY: a referenced folio's pfn maps to its `struct folio`,
        // which stays valid while the reference is held.
        unsafe { &*bindings::pfn_folio(pfn as _).cast::<Self>() }
    }

    /// Maps the folio page by page over `[offset, offset + len)` and calls
    /// `f(mapped address, bytes done so far, bytes in this page)`; the
    /// address is valid for the call only (`kmap_local_folio()`). For
    /// copies between a folio and memory that is not a Rust slice (I/O
    /// memory, say). `EINVAL` if the range is not within the folio.
    pub fn for_each_chunk(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.size() {
            return Err(EINVAL);
        }
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let n = core::cmp::min(len - done, PAGE_SIZE - pos % PAGE_SIZE);
            // SAFETY: the folio is valid and `pos < self.size()`.
            let map = unsafe { bindings::kmap_local_folio(self.as_raw(), pos) };
            f(map.cast::<u8>(), done, n);
            // SAFETY: `map` came from `kmap_local_folio` in this context and
            // is unmapped once, in reverse order of mapping (only one at a
            // time here).
            unsafe { bindings::kunmap_local(map) };
            done += n;
        }
        Ok(())
    }
}

/// A folio whose lock is held.
///
/// Either taken by [`Folio::lock`] (released on drop) or handed to a
/// callback whose caller holds the lock ([`LockedFolio::from_locked`]).
///
/// # Invariants
///
/// The folio lock is held for the lifetime `'a`; if `owned`, by this guard.
pub struct LockedFolio<'a> {
    folio: &'a Folio,
    owned: bool,
}

impl<'a> LockedFolio<'a> {
    /// Views a folio that the caller has locked.
    ///
    /// # Safety
    ///
    /// The folio lock must be held, and the folio referenced, for `'a`.
    pub unsafe fn from_locked(ptr: *mut bindings::folio) -> Self {
        // SAFETY: the caller guarantees validity for `'a`.
        let folio = unsafe { Folio::from_raw(ptr) };
        // INVARIANT: the caller holds the lock for `'a`.
        Self {
            folio,
            owned: false,
        }
    }
}

impl LockedFolio<'_> {
    /// Marks the folio dirty (`folio_mark_dirty()`): its contents changed
    /// behind the filesystem's back, e.g. a device may write to it, and
    /// must be written back before the folio is reclaimed.
    pub fn mark_dirty(&self) {
        // SAFETY: the folio is locked (type invariant), which keeps it from
        // racing with truncation as `folio_mark_dirty()` requires.
        unsafe { bindings::folio_mark_dirty(self.as_raw()) };
    }
}

impl core::ops::Deref for LockedFolio<'_> {
    type Target = Folio;

    fn deref(&self) -> &Folio {
        self.folio
    }
}

impl Drop for LockedFolio<'_> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: By the type invariant this guard holds the lock.
            unsafe { bindings::folio_unlock(self.folio.as_raw()) };
        }
    }
}
