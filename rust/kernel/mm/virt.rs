// SPDX-License-Identifier: GPL-2.0

//! Virtual memory areas: the mappings of a user address space.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).

use crate::{bindings, mm::MmWithUser, types::Opaque};

/// The type of the `vm_flags` of a mapping.
pub type VmFlags = bindings::vm_flags_t;

/// The `VM_*` flags of a mapping ([`VmaRef::flags`]).
pub mod flags {
    use super::VmFlags;
    use crate::bindings;

    /// The mapping may be read.
    pub const READ: VmFlags = bindings::VM_READ as VmFlags;
    /// The mapping may be written.
    pub const WRITE: VmFlags = bindings::VM_WRITE as VmFlags;
    /// The mapping may be executed.
    pub const EXEC: VmFlags = bindings::VM_EXEC as VmFlags;
    /// Writes are shared with other mappings of the same memory (no
    /// copy-on-write).
    pub const SHARED: VmFlags = bindings::VM_SHARED as VmFlags;
    /// `mprotect()` may make the mapping writable.
    pub const MAYWRITE: VmFlags = bindings::VM_MAYWRITE as VmFlags;
    /// The mapping maps raw page frames, which may have no `struct page`.
    pub const PFNMAP: VmFlags = bindings::VM_PFNMAP as VmFlags;
    /// The mapping maps device memory.
    pub const IO: VmFlags = bindings::VM_IO as VmFlags;
    /// The mapping may map both pages and raw page frames.
    pub const MIXEDMAP: VmFlags = bindings::VM_MIXEDMAP as VmFlags;
    /// The mapping's pages are locked in memory (`mlock()`).
    pub const LOCKED: VmFlags = bindings::VM_LOCKED as VmFlags;
    /// The mapping is backed by hugetlbfs.
    pub const HUGETLB: VmFlags = bindings::VM_HUGETLB as VmFlags;
}

/// A mapping of a user address space, borrowed under its mmap lock.
///
/// Obtained from [`MmapReadGuard::vma_lookup`] or
/// [`MmapReadGuard::find_vma`]; this view reads the mapping and does not
/// change it.
///
/// [`MmapReadGuard::vma_lookup`]: super::MmapReadGuard::vma_lookup
/// [`MmapReadGuard::find_vma`]: super::MmapReadGuard::find_vma
///
/// # Invariants
///
/// A `&VmaRef` points to a valid `struct vm_area_struct` of an mm with
/// users, whose mmap lock is held (at least for reading) for the lifetime of
/// the reference, so that the mapping is neither unmapped nor changed.
#[repr(transparent)]
pub struct VmaRef {
    vma: Opaque<bindings::vm_area_struct>,
}

impl VmaRef {
    /// Borrows a mapping from a raw pointer.
    ///
    /// # Safety
    ///
    /// `vma` must point to a valid mapping of an mm with users whose mmap
    /// lock is held for `'a`.
    pub unsafe fn from_raw<'a>(vma: *const bindings::vm_area_struct) -> &'a Self {
        // SAFETY: `VmaRef` is a transparent wrapper of `vm_area_struct`;
        // validity for `'a` is the caller's promise.
        unsafe { &*vma.cast::<Self>() }
    }

    /// Returns the raw `struct vm_area_struct` pointer.
    pub fn as_raw(&self) -> *mut bindings::vm_area_struct {
        self.vma.get()
    }

    /// The address space the mapping belongs to.
    pub fn mm(&self) -> &MmWithUser {
        // SAFETY: By the type invariant the mapping is valid; `vm_mm` never
        // changes.
        let mm = unsafe { (*self.as_raw()).vm_mm };
        // SAFETY: By the type invariant the mm has users and its mmap lock
        // is held for the lifetime of `self`, so it keeps its users.
        unsafe { MmWithUser::from_raw(mm) }
    }

    /// The first address of the mapping.
    pub fn start(&self) -> usize {
        // SAFETY: By the type invariant the mapping is valid, and the mmap
        // lock keeps its bounds stable.
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// The address just past the end of the mapping.
    pub fn end(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// The mapping's `VM_*` flags; see [`flags`].
    pub fn flags(&self) -> VmFlags {
        // SAFETY: By the type invariant the mapping is valid; flags change
        // only under the mmap write lock, which cannot be held while the
        // read side is.
        unsafe { (*self.as_raw()).__bindgen_anon_2.vm_flags }
    }

    /// Whether the mapping may be read.
    pub fn is_readable(&self) -> bool {
        self.flags() & flags::READ != 0
    }

    /// Whether the mapping may be written.
    pub fn is_writable(&self) -> bool {
        self.flags() & flags::WRITE != 0
    }

    /// Whether writes to the mapping are shared rather than copied on
    /// write.
    pub fn is_shared(&self) -> bool {
        self.flags() & flags::SHARED != 0
    }

    /// Whether this is anonymous memory: no file and no special driver
    /// behind it (`vma_is_anonymous()`). A shared anonymous mapping is
    /// backed by a shmem file and is not anonymous in this sense.
    pub fn is_anonymous(&self) -> bool {
        // SAFETY: By the type invariant the mapping is valid and stable.
        unsafe { bindings::vma_is_anonymous(self.as_raw()) }
    }

    /// Whether a file backs the mapping.
    pub fn has_file(&self) -> bool {
        // SAFETY: By the type invariant the mapping is valid; `vm_file` is
        // stable under the mmap lock.
        !unsafe { (*self.as_raw()).vm_file }.is_null()
    }

    /// Whether the mapping is backed by hugetlbfs pages.
    pub fn is_hugetlb(&self) -> bool {
        // SAFETY: By the type invariant the mapping is valid and stable.
        unsafe { bindings::is_vm_hugetlb_page(self.as_raw()) }
    }
}
