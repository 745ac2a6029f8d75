// SPDX-License-Identifier: GPL-2.0

//! Filesystems: registering a filesystem type, mounts, files and address
//! spaces.
//!
//! C headers: [`include/linux/fs.h`](srctree/include/linux/fs.h),
//! [`include/linux/fs_context.h`](srctree/include/linux/fs_context.h) and
//! [`include/linux/mount.h`](srctree/include/linux/mount.h).

pub mod address_space;
pub mod file;

pub use address_space::{AddressSpace, FolioMigration};
pub use file::File;

use crate::{
    bindings,
    error::{from_err_ptr, to_result, Result},
    prelude::*,
    str::CStr,
    types::Opaque,
    ThisModule,
};
use core::ptr::NonNull;

/// A filesystem context: the state of a mount being set up.
///
/// # Invariants
///
/// Points to a valid `struct fs_context` for as long as a reference exists.
#[repr(transparent)]
pub struct FsContext(Opaque<bindings::fs_context>);

impl FsContext {
    /// Borrows a filesystem context from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid and not used by anybody else for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::fs_context) -> &'a mut Self {
        // SAFETY: transparent wrapper; validity and exclusivity are the
        // caller's promise.
        unsafe { &mut *ptr.cast() }
    }

    /// Returns the raw pointer.
    pub fn as_raw(&mut self) -> *mut bindings::fs_context {
        self.0.get()
    }
}

/// A filesystem type.
pub trait FileSystem {
    /// The name under which it is registered (`mount -t NAME`).
    const NAME: &'static CStr;

    /// `FS_*` flags of the type.
    const FLAGS: i32 = 0;

    /// Sets up a new mount: fills in the context's operations and private
    /// data (the `->init_fs_context` of `struct file_system_type`).
    fn init_fs_context(fc: &mut FsContext) -> Result;
}

/// The registration of a filesystem type: unregistered when dropped.
///
/// # Invariants
///
/// The type is registered, by the [`Registration::register`] call that made
/// this value.
pub struct Registered(&'static Registration);

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); the type's module, which
        // every superblock of the type holds, is going or the registrant
        // is done with it, so no superblock is left.
        unsafe { bindings::unregister_filesystem(self.0.fs.get()) };
        // INVARIANT: no longer registered; `register` may be called again.
        self.0
            .registered
            .store(false, core::sync::atomic::Ordering::Release);
    }
}

/// A filesystem type, in static storage.
///
/// `struct file_system_type` embeds the lockdep class keys of its
/// superblocks' locks, which lockdep requires to be static objects: so a
/// type lives in a `static` and is registered in place.
///
/// # Invariants
///
/// While `registered` is true, `fs` is initialised for `T` and registered
/// with the VFS; a [`Registered`] owns that registration.
pub struct Registration {
    fs: Opaque<bindings::file_system_type>,
    registered: core::sync::atomic::AtomicBool,
}

// SAFETY: The registration does not depend on the thread that made it, and
// the VFS serialises access to the type with its own locks.
unsafe impl Send for Registration {}
// SAFETY: `register` initialises `fs` once before publishing it with a
// release store; readers check `registered` with an acquire load.
unsafe impl Sync for Registration {}

impl Registration {
    /// An unregistered type, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            fs: Opaque::uninit(),
            registered: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Registers the type as filesystem `T`, owned by `module`, until the
    /// returned [`Registered`] is dropped: a module keeps it in its module
    /// struct, dropped when it is unloaded. Every superblock of the type
    /// holds a reference on `module`, so none is left by then.
    ///
    /// Fails with `EBUSY` if already registered.
    pub fn register<T: FileSystem>(
        &'static self,
        module: &'static ThisModule,
    ) -> Result<Registered> {
        use core::sync::atomic::Ordering;
        if self.registered.load(Ordering::Acquire) {
            return Err(EBUSY);
        }
        let fs = self.fs.get();
        // SAFETY: not registered yet, so nobody else uses `fs`; zero is a
        // valid `file_system_type` (every field is optional).
        unsafe { fs.write(core::mem::zeroed()) };
        // SAFETY: `fs` was just initialised and is ours until registered.
        let f = unsafe { &mut *fs };
        f.owner = module.as_ptr();
        f.name = T::NAME.as_char_ptr();
        f.init_fs_context = Some(init_fs_context_callback::<T>);
        f.kill_sb = Some(bindings::kill_litter_super);
        f.fs_flags = T::FLAGS;
        // SAFETY: `fs` is initialised and static, so it outlives its
        // registration.
        to_result(unsafe { bindings::register_filesystem(fs) })?;
        // INVARIANT: initialised and registered.
        self.registered.store(true, Ordering::Release);
        // INVARIANT: registered just above, by this call.
        Ok(Registered(self))
    }

    /// The raw `struct file_system_type`, once registered.
    pub fn get(&self) -> Result<*mut bindings::file_system_type> {
        if self.registered.load(core::sync::atomic::Ordering::Acquire) {
            Ok(self.fs.get())
        } else {
            Err(ENODEV)
        }
    }
}

/// `->init_fs_context` of a type registered for `T`.
///
/// # Safety
///
/// Called by the VFS only, with a context being initialised.
unsafe extern "C" fn init_fs_context_callback<T: FileSystem>(
    fc: *mut bindings::fs_context,
) -> crate::ffi::c_int {
    // SAFETY: The VFS passes a valid context that nobody else uses during
    // `->init_fs_context`.
    let fc = unsafe { FsContext::from_raw(fc) };
    match T::init_fs_context(fc) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// A mounted filesystem instance (`struct vfsmount`), borrowed.
///
/// # Invariants
///
/// Points to a valid mount for as long as a reference to it exists.
#[repr(transparent)]
pub struct Mount(Opaque<bindings::vfsmount>);

impl Mount {
    /// Borrows a mount from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a mount that stays mounted for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::vfsmount) -> &'a Self {
        // SAFETY: transparent wrapper; validity is the caller's promise.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `struct vfsmount`.
    pub fn as_raw(&self) -> *mut bindings::vfsmount {
        self.0.get()
    }
}

/// A mount made by the kernel for its own use (`vfs_kern_mount()`), not
/// attached to any namespace; unmounted when dropped.
///
/// # Invariants
///
/// `mnt` is a valid kernel mount owned by this object.
pub struct KernMount {
    mnt: NonNull<bindings::vfsmount>,
}

// SAFETY: A vfsmount is reference counted and may be used and released from
// any thread.
unsafe impl Send for KernMount {}
// SAFETY: Shared use only hands the pointer to VFS functions that are safe
// to call concurrently.
unsafe impl Sync for KernMount {}

impl KernMount {
    /// Mounts a private instance of `fs`, with mount options `options`
    /// (for example `c_str!("huge=within_size")`) parsed as by `mount -o`.
    pub fn new(fs: &'static Registration, options: Option<&CStr>) -> Result<Self> {
        let fs = fs.get()?;
        // Filesystems parse legacy option strings in place (tmpfs splits
        // them with strsep()): hand over a private, writable copy.
        let mut data = KVec::new();
        if let Some(o) = options {
            data.extend_from_slice(o.as_bytes_with_nul(), GFP_KERNEL)?;
        }
        let data_ptr = if data.is_empty() {
            core::ptr::null_mut()
        } else {
            data.as_mut_ptr().cast()
        };
        // SAFETY: `fs` is registered and static. `data_ptr` is NULL or a
        // NUL-terminated string we own until after the call.
        let mnt = from_err_ptr(unsafe {
            bindings::vfs_kern_mount(fs, bindings::SB_KERNMOUNT as _, (*fs).name, data_ptr)
        })?;
        // INVARIANT: `vfs_kern_mount` returned a valid mount, now ours.
        Ok(Self {
            mnt: NonNull::new(mnt).ok_or(EINVAL)?,
        })
    }

    /// Gives up ownership: the caller must pass the pointer back to
    /// [`KernMount::from_raw`] to unmount.
    pub fn into_raw(self) -> *mut bindings::vfsmount {
        let mnt = self.mnt.as_ptr();
        core::mem::forget(self);
        mnt
    }

    /// Takes back ownership of a mount from [`KernMount::into_raw`].
    ///
    /// # Safety
    ///
    /// `mnt` came from `into_raw` and is not used by the caller afterwards.
    pub unsafe fn from_raw(mnt: *mut bindings::vfsmount) -> Self {
        // INVARIANT: `into_raw` gave up a valid, owned mount.
        Self {
            // SAFETY: `into_raw` output is never NULL.
            mnt: unsafe { NonNull::new_unchecked(mnt) },
        }
    }
}

impl core::ops::Deref for KernMount {
    type Target = Mount;

    fn deref(&self) -> &Mount {
        // SAFETY: By the type invariant the mount is valid while `self` is.
        unsafe { Mount::from_raw(self.mnt.as_ptr()) }
    }
}

impl Drop for KernMount {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the mount is ours to release.
        unsafe { bindings::kern_unmount(self.mnt.as_ptr()) };
    }
}
