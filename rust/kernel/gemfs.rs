// SPDX-License-Identifier: GPL-2.0

//! gemfs objects for drivers: device-held memory that migration can move.
//!
//! A driver mounts a private gemfs instance ([`Mount`]), creates objects on
//! it ([`Object`]) with an [`Owner`], and takes [`Hold`]s on their folios
//! while its device uses them. When the mm wants to migrate a held folio,
//! gemfs calls [`Owner::release`]: the owner stops the device from using
//! the folio and drops its holds on it. After the migration,
//! [`Owner::migrated`] says which folio now holds the data.
//!
//! Before truncation, hole punching or memory failure takes folios from an
//! object's file, gemfs calls [`Owner::invalidate`]: the owner stops the
//! device from using them and drops its holds there.
//!
//! The lock order is in `Documentation/filesystems/gemfs.rst`: an owner must
//! not hold, while calling [`ObjectRef::get_folio`] (which takes the
//! mapping's `invalidate_lock` and may lock folios), a lock that one of its
//! callbacks takes; lockdep checks this.
//!
//! gemfs may be a module (`CONFIG_GEMFS=m`) while this crate is built in:
//! nothing here may be compiled into the kernel crate itself, where a call
//! to a `gemfs_*` function would be an undefined symbol of vmlinux. Every
//! function that calls one is generic or `#[inline]`, so it is compiled
//! only into its users, which are modules depending on gemfs's module too.
//!
//! C header: [`include/linux/gemfs.h`](srctree/include/linux/gemfs.h).

use crate::{
    bindings,
    error::{from_err_ptr, to_result, Result},
    folio::{Folio, LockedFolio},
    fs::File,
    mm::migrate::MigrateMode,
    prelude::*,
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};
use core::{marker::PhantomData, ptr::NonNull};

/// Transparent huge page policy of a mount (tmpfs's `huge=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Huge {
    /// Never allocate huge folios.
    Never,
    /// Allocate huge folios whenever the file size allows a whole one.
    Always,
    /// Only within the file size.
    WithinSize,
    /// Only where madvise(MADV_HUGEPAGE) asked for them.
    Advise,
}

/// A private gemfs mount, unmounted when dropped. Objects may outlive it:
/// each object's file keeps the mount referenced (`file->f_path.mnt`).
///
/// # Invariants
///
/// `mnt` came from `gemfs_kern_mount()` and is owned by this object.
pub struct Mount {
    mnt: NonNull<bindings::vfsmount>,
}

// SAFETY: mounts may be used and released from any thread.
unsafe impl Send for Mount {}
// SAFETY: creating objects on a mount is safe concurrently.
unsafe impl Sync for Mount {}

impl Mount {
    /// Mounts a private gemfs instance with huge page policy `huge`.
    #[inline]
    pub fn new(huge: Huge) -> Result<Self> {
        let huge = match huge {
            Huge::Never => bindings::gemfs_huge_GEMFS_HUGE_NEVER,
            Huge::Always => bindings::gemfs_huge_GEMFS_HUGE_ALWAYS,
            Huge::WithinSize => bindings::gemfs_huge_GEMFS_HUGE_WITHIN_SIZE,
            Huge::Advise => bindings::gemfs_huge_GEMFS_HUGE_ADVISE,
        };
        // SAFETY: any policy value is accepted or refused with an error.
        let mnt = from_err_ptr(unsafe { bindings::gemfs_kern_mount(huge) })?;
        // INVARIANT: a successful `gemfs_kern_mount` returns a new mount.
        Ok(Self {
            mnt: NonNull::new(mnt).ok_or(ENOMEM)?,
        })
    }

    /// Creates an object of `size` bytes owned by `owner`.
    ///
    /// Memory is accounted as it is used (`VM_NORESERVE`), as GPU drivers do.
    pub fn create_object<T: Owner>(
        &self,
        name: &CStr,
        size: usize,
        owner: Arc<T>,
    ) -> Result<Object<T>> {
        let size = i64::try_from(size).map_err(|_| EINVAL)?;
        // SAFETY: the mount is live (type invariant); `name` is a C string.
        let raw = from_err_ptr(unsafe {
            bindings::gemfs_object_create(
                self.mnt.as_ptr(),
                name.as_char_ptr(),
                size,
                bindings::VM_NORESERVE as _,
            )
        })?;
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        let data = owner.into_foreign();
        // SAFETY: `raw` is a live object; the vtable is static; `data` is
        // the owner's foreign form, released in `Object::drop` after the
        // object (and with it, any use of the callbacks) is gone.
        let ret = to_result(unsafe {
            bindings::gemfs_object_set_owner(
                raw.as_ptr(),
                &OwnerVtable::<T>::VTABLE,
                data.cast_mut(),
            )
        });
        // INVARIANT: `raw` is a live object whose owner data is `data`.
        let obj = Object {
            raw,
            owner: data,
            _t: PhantomData,
        };
        ret.map(|()| obj)
    }
}

impl Drop for Mount {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariant the mount is ours. Objects still
        // alive keep it referenced through their files.
        unsafe { bindings::gemfs_kern_unmount(self.mnt.as_ptr()) };
    }
}

/// A driver's owner of gemfs objects: what gemfs asks when it needs a held
/// folio back.
pub trait Owner: Send + Sync + Sized + 'static {
    /// Stops the device from using `folio` of `obj` and drops every
    /// [`Hold`] on it.
    ///
    /// Runs with the folio locked. With [`MigrateMode::Async`] it must not
    /// sleep: return `EBUSY` if the device is using the folio. The sync
    /// modes may wait for the device for a bounded time, then return
    /// `EBUSY`. On error the owner keeps its holds and the folio stays.
    ///
    /// gemfs asks about any folio of the object that has references beyond
    /// the page cache's (it does not record which folios are held): return
    /// `ENOENT` for a folio the owner holds no reference to.
    fn release(
        owner: ArcBorrow<'_, Self>,
        obj: &ObjectRef,
        folio: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result;

    /// The migration that followed a successful `release` is over: `folio`
    /// now holds the data (the new folio if `migrated`, else the old one).
    /// The owner may take holds on it with [`ObjectRef::hold_locked`]; it
    /// must not sleep. By default it does nothing and re-faults later.
    fn migrated(
        _owner: ArcBorrow<'_, Self>,
        _obj: &ObjectRef,
        _folio: &LockedFolio<'_>,
        _migrated: bool,
    ) {
    }

    /// Truncation or hole punching is about to remove or zero pages `first`
    /// to `last` (inclusive) of `obj`, or memory failure found one of them
    /// poisoned: stop the device from using every folio overlapping them and
    /// drop every [`Hold`] on those. The owner cannot refuse.
    ///
    /// Runs with the mapping's `invalidate_lock` held for writing (truncation,
    /// hole punching) or with the poisoned folio locked (memory failure). It
    /// may sleep, but not wait for anything that waits for
    /// [`ObjectRef::get_folio`], which blocks until the folios are gone.
    ///
    /// A hold that [`ObjectRef::get_folio`] returned before this call but that
    /// the owner records only after it is the owner's to catch: count
    /// invalidations under the lock this takes, and drop a hold got before
    /// the count changed, as with `mmu_interval_read_retry()`.
    fn invalidate(owner: ArcBorrow<'_, Self>, obj: &ObjectRef, first: usize, last: usize);
}

struct OwnerVtable<T: Owner>(PhantomData<T>);

impl<T: Owner> OwnerVtable<T> {
    const VTABLE: bindings::gemfs_owner_ops = bindings::gemfs_owner_ops {
        release: Some(Self::release),
        migrated: Some(Self::migrated),
        invalidate: Some(Self::invalidate),
    };

    /// `->release` for owner `T`.
    ///
    /// # Safety
    ///
    /// Called by gemfs only, as `include/linux/gemfs.h` describes, with the
    /// owner data of an `Object<T>`.
    unsafe extern "C" fn release(
        obj: *mut bindings::gemfs_object,
        folio: *mut bindings::folio,
        mode: bindings::migrate_mode,
        data: *mut crate::ffi::c_void,
    ) -> crate::ffi::c_int {
        let Some(mode) = MigrateMode::from_raw(mode) else {
            return EINVAL.to_errno();
        };
        // SAFETY: gemfs passes the live object, the folio it has locked,
        // and the owner data given to `gemfs_object_set_owner`, which
        // `Object` keeps alive while the object exists.
        let (owner, obj, folio) = unsafe {
            (
                <Arc<T> as ForeignOwnable>::borrow(data.cast_const()),
                ObjectRef::from_raw(obj),
                LockedFolio::from_locked(folio),
            )
        };
        match T::release(owner, obj, &folio, mode) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `->migrated` for owner `T`.
    ///
    /// # Safety
    ///
    /// As for [`Self::release`].
    unsafe extern "C" fn migrated(
        obj: *mut bindings::gemfs_object,
        folio: *mut bindings::folio,
        migrated: bool,
        data: *mut crate::ffi::c_void,
    ) {
        // SAFETY: as in `release`.
        let (owner, obj, folio) = unsafe {
            (
                <Arc<T> as ForeignOwnable>::borrow(data.cast_const()),
                ObjectRef::from_raw(obj),
                LockedFolio::from_locked(folio),
            )
        };
        T::migrated(owner, obj, &folio, migrated);
    }

    /// `->invalidate` for owner `T`.
    ///
    /// # Safety
    ///
    /// As for [`Self::release`].
    unsafe extern "C" fn invalidate(
        obj: *mut bindings::gemfs_object,
        first: crate::ffi::c_ulong,
        last: crate::ffi::c_ulong,
        data: *mut crate::ffi::c_void,
    ) {
        // SAFETY: gemfs passes the live object and the owner data given to
        // `gemfs_object_set_owner`, which `Object` keeps alive while the
        // object exists.
        let (owner, obj) = unsafe {
            (
                <Arc<T> as ForeignOwnable>::borrow(data.cast_const()),
                ObjectRef::from_raw(obj),
            )
        };
        T::invalidate(owner, obj, first, last);
    }
}

/// A gemfs object: an unlinked file on a gemfs mount, with its owner.
/// Destroyed when dropped; the owner must have dropped its holds by then.
///
/// # Invariants
///
/// `raw` is a live object handle owned by this value; its owner data is
/// `owner`, an `Arc<T>` in foreign form.
pub struct Object<T: Owner> {
    raw: NonNull<bindings::gemfs_object>,
    owner: *const crate::ffi::c_void,
    _t: PhantomData<Arc<T>>,
}

// SAFETY: the object's state is protected by gemfs's locks; `T` is
// `Send + Sync`.
unsafe impl<T: Owner> Send for Object<T> {}
// SAFETY: as above.
unsafe impl<T: Owner> Sync for Object<T> {}

impl<T: Owner> Object<T> {
    /// The owner.
    pub fn owner(&self) -> ArcBorrow<'_, T> {
        // SAFETY: `owner` is the `Arc<T>` foreign form, alive until drop.
        unsafe { <Arc<T> as ForeignOwnable>::borrow(self.owner) }
    }
}

impl<T: Owner> core::ops::Deref for Object<T> {
    type Target = ObjectRef;

    fn deref(&self) -> &ObjectRef {
        // SAFETY: By the type invariant the handle is live while `self` is.
        unsafe { ObjectRef::from_raw(self.raw.as_ptr()) }
    }
}

impl<T: Owner> Drop for Object<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the handle is ours; after this no
        // callback can run, so the owner data can go too.
        unsafe { bindings::gemfs_object_destroy(self.raw.as_ptr()) };
        // SAFETY: `owner` came from `Arc::into_foreign` in `create_object`.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(self.owner) });
    }
}

/// A gemfs object, borrowed: what the owner's callbacks and holds see.
///
/// # Invariants
///
/// Points to a live object handle for as long as a reference exists.
#[repr(transparent)]
pub struct ObjectRef(bindings::gemfs_object);

impl ObjectRef {
    /// # Safety
    ///
    /// `raw` must be a live object handle for `'a`.
    unsafe fn from_raw<'a>(raw: *mut bindings::gemfs_object) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    fn as_raw(&self) -> *mut bindings::gemfs_object {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// The object's file (for mapping it to userspace).
    #[inline]
    pub fn file(&self) -> &File {
        // SAFETY: the object keeps its file referenced while it lives.
        unsafe { File::from_raw(bindings::gemfs_object_file(self.as_raw())) }
    }

    /// Takes a hold on the folio at page `index` for device use, reading it
    /// back from swap or allocating it as needed. May sleep: takes the
    /// mapping's `invalidate_lock` for reading, so it waits for a truncation
    /// or hole punch in progress. Fails with `EINVAL` beyond the end of the
    /// file and `EIO` for a poisoned folio.
    #[inline]
    pub fn get_folio(&self, index: usize) -> Result<Hold> {
        // SAFETY: the handle is live (type invariant).
        let f = unsafe { bindings::gemfs_object_get_folio(self.as_raw(), index as _) };
        let f = from_err_ptr(f)?;
        // INVARIANT: gemfs returned a folio with one hold, now owned.
        Ok(Hold {
            obj: NonNull::from(self),
            folio: NonNull::new(f.cast()).ok_or(ENOMEM)?,
        })
    }

    /// Takes a hold on a folio of this object that the caller has locked,
    /// without sleeping: for [`Owner::migrated`].
    #[inline]
    pub fn hold_locked(&self, folio: &LockedFolio<'_>) -> Result<Hold> {
        // SAFETY: the handle is live; the folio is locked and (gemfs's
        // contract for `migrated`) belongs to this object.
        to_result(unsafe {
            bindings::gemfs_object_hold_locked_folio(self.as_raw(), folio.as_raw())
        })?;
        // INVARIANT: the hold was taken for us.
        Ok(Hold {
            obj: NonNull::from(self),
            folio: NonNull::from(&**folio),
        })
    }

    /// Number of holds on the object's folios.
    #[inline]
    pub fn holds(&self) -> usize {
        // SAFETY: the handle is live.
        unsafe { bindings::gemfs_object_holds(self.as_raw()) as usize }
    }
}

/// A hold on a folio of a gemfs object: a reference gemfs accounts to the
/// object's owner. Dropped with `gemfs_object_put_folio()`.
///
/// A hold must be dropped before its object: dropping an [`Object`] with
/// holds left is an owner bug that gemfs reports with a warning.
///
/// # Invariants
///
/// `folio` is held once through the live object `obj`, by this value.
pub struct Hold {
    obj: NonNull<ObjectRef>,
    folio: NonNull<Folio>,
}

// SAFETY: a hold is a counted reference; it may be dropped on any thread.
unsafe impl Send for Hold {}
// SAFETY: `&Hold` only gives `&Folio`, which is `Sync`.
unsafe impl Sync for Hold {}

impl Hold {
    /// The held folio.
    pub fn folio(&self) -> &Folio {
        // SAFETY: the hold keeps a reference to the folio.
        unsafe { self.folio.as_ref() }
    }
}

impl Drop for Hold {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariant the object is live and the folio
        // held through it by us; the hold is given back once.
        unsafe {
            bindings::gemfs_object_put_folio(self.obj.as_ptr().cast(), self.folio.as_ptr().cast())
        };
    }
}
