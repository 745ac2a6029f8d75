// SPDX-License-Identifier: GPL-2.0

//! Files: open file descriptions (`struct file`).
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h).

use super::AddressSpace;
use crate::{
    bindings,
    types::{AlwaysRefCounted, Opaque},
};
use core::ptr::NonNull;

/// An open file.
///
/// Always reference counted: `&File` borrows a reference, `ARef<File>`
/// owns one.
///
/// # Invariants
///
/// Points to a valid `struct file` with a nonzero reference count for as
/// long as a reference to it exists.
#[repr(transparent)]
pub struct File(Opaque<bindings::file>);

// SAFETY: `struct file` is reference counted with atomics and released by
// `fput()` from any thread.
unsafe impl Send for File {}
// SAFETY: The methods on `&File` only read fields that are immutable after
// the file is opened.
unsafe impl Sync for File {}

// SAFETY: `get_file()` and `fput()` are the file's reference counting.
unsafe impl AlwaysRefCounted for File {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the file is valid and referenced.
        unsafe { bindings::get_file(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up one reference it owns.
        unsafe { bindings::fput(obj.cast().as_ptr()) };
    }
}

impl File {
    /// Borrows a file from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a file whose reference count stays above zero
    /// for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *const bindings::file) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `struct file`.
    pub fn as_raw(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// The page cache of the file's inode.
    pub fn mapping(&self) -> &AddressSpace {
        // SAFETY: `f_mapping` is set when the file is opened and stays
        // valid while the file (which pins its inode) is referenced.
        unsafe { AddressSpace::from_raw((*self.as_raw()).f_mapping) }
    }

    /// The size of the file's inode, in bytes (`i_size_read()`).
    pub fn size(&self) -> i64 {
        // SAFETY: the file pins its inode; `i_size_read` is safe against
        // concurrent size changes.
        unsafe { bindings::i_size_read((*self.as_raw()).f_inode) }
    }

    /// Sets the file's size to `len` bytes (`vfs_truncate()`, as
    /// `truncate(2)` does): shrinking removes the data beyond `len`. Takes the
    /// inode's locks and may sleep.
    pub fn truncate(&self, len: i64) -> crate::error::Result {
        // SAFETY: the file is referenced, so its path (mount and dentry) is
        // valid; `vfs_truncate` checks permissions and the length.
        let ret = unsafe { bindings::vfs_truncate(&(*self.as_raw()).f_path, len) };
        // 0 or a negative errno, which fits.
        crate::error::to_result(ret as crate::ffi::c_int)
    }

    /// Punches a hole of `len` bytes at `offset`, keeping the size
    /// (`vfs_fallocate()` with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`,
    /// as `madvise(MADV_REMOVE)` does): the range reads back zeros. May sleep.
    pub fn punch_hole(&self, offset: i64, len: i64) -> crate::error::Result {
        // `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, values of the uAPI
        // (`include/uapi/linux/falloc.h`, which bindgen is not given).
        let mode: crate::ffi::c_int = 0x02 | 0x01;
        // SAFETY: the file is referenced; `vfs_fallocate` checks the file's
        // mode, the flags and the range.
        crate::error::to_result(unsafe {
            bindings::vfs_fallocate(self.as_raw(), mode, offset, len)
        })
    }

    /// The type of the filesystem the file is on.
    pub fn fs_type(&self) -> *mut bindings::file_system_type {
        // SAFETY: the file pins its inode, which pins its superblock.
        unsafe { (*(*(*self.as_raw()).f_inode).i_sb).s_type }
    }
}
