// SPDX-License-Identifier: GPL-2.0

//! debugfs: files for debugging and statistics.
//!
//! Available with or without `CONFIG_DEBUG_FS`, as the C interface is:
//! without it, [`Dir::new`] fails with `ENODEV` and users carry on without
//! their files.
//!
//! C header: [`include/linux/debugfs.h`](srctree/include/linux/debugfs.h).

use crate::{bindings, error::Result, str::CStr};
use core::{ptr::NonNull, sync::atomic::AtomicU64};

/// A debugfs directory, removed with everything in it when dropped.
///
/// # Invariants
///
/// `dentry` is a directory this object created and has not removed.
pub struct Dir {
    dentry: NonNull<bindings::dentry>,
}

// SAFETY: debugfs entries may be created and removed from any thread.
unsafe impl Send for Dir {}
// SAFETY: `&Dir` only creates entries below the directory, which debugfs
// serialises.
unsafe impl Sync for Dir {}

impl Dir {
    /// Creates directory `name` at the top of debugfs.
    ///
    /// Fails with `ENODEV` when debugfs is not built in, or is disabled.
    #[cfg(not(CONFIG_DEBUG_FS))]
    pub fn new(_name: &CStr) -> Result<Self> {
        Err(crate::error::code::ENODEV)
    }

    /// Creates directory `name` at the top of debugfs.
    ///
    /// Fails with `ENODEV` when debugfs is not built in, or is disabled.
    #[cfg(CONFIG_DEBUG_FS)]
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is NUL terminated and copied; NULL is the root.
        let d = crate::error::from_err_ptr(unsafe {
            bindings::debugfs_create_dir(name.as_char_ptr(), core::ptr::null_mut())
        })?;
        // INVARIANT: a successful `debugfs_create_dir` returns a directory.
        Ok(Self {
            dentry: NonNull::new(d).ok_or(crate::error::code::ENOMEM)?,
        })
    }

    /// Creates a read-only file `name` that shows `value` in decimal.
    ///
    /// `value` is static, so it outlives the file.
    pub fn u64_file(&self, name: &CStr, value: &'static AtomicU64) {
        // Without debugfs no `Dir` exists, so this is never reached.
        #[cfg(not(CONFIG_DEBUG_FS))]
        let _ = (self.dentry, name, value);
        #[cfg(CONFIG_DEBUG_FS)]
        // SAFETY: the directory is valid (type invariant); `value` is static
        // and has the size and alignment of a `u64`, which debugfs reads
        // with a plain aligned load, atomic on 64-bit architectures.
        unsafe {
            bindings::debugfs_create_u64(
                name.as_char_ptr(),
                0o444,
                self.dentry.as_ptr(),
                value.as_ptr(),
            )
        };
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        #[cfg(CONFIG_DEBUG_FS)]
        // SAFETY: By the type invariant the directory exists and is ours.
        unsafe {
            bindings::debugfs_remove(self.dentry.as_ptr())
        };
    }
}
