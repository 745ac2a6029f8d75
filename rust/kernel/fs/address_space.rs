// SPDX-License-Identifier: GPL-2.0

//! Address spaces: the page cache of an inode (`struct address_space`).
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h).

use crate::{
    bindings,
    folio::{Folio, LockedFolio},
    mm::migrate::MigrateMode,
    types::{ForeignOwnable, Opaque},
};

/// The page cache of an inode.
///
/// # Invariants
///
/// Points to a valid `struct address_space` for as long as a reference to
/// it exists (it is embedded in its inode, which the borrower keeps alive).
#[repr(transparent)]
pub struct AddressSpace(Opaque<bindings::address_space>);

// SAFETY: The address space is shared kernel state protected by its own
// locks; nothing ties it to a thread.
unsafe impl Send for AddressSpace {}
// SAFETY: Methods on `&AddressSpace` take the locks they need.
unsafe impl Sync for AddressSpace {}

impl AddressSpace {
    /// Borrows an address space from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for `'a`: its inode must stay alive.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::address_space) -> &'a Self {
        // SAFETY: transparent wrapper; validity is the caller's promise.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `struct address_space`.
    pub fn as_raw(&self) -> *mut bindings::address_space {
        self.0.get()
    }

    /// Makes page cache allocations of this mapping `GFP_HIGHUSER`: not
    /// movable. For memory that stays pinned, as drm_gem_shmem's does (the
    /// baseline that gemfs is compared against); shmem's default is
    /// `GFP_HIGHUSER_MOVABLE`.
    pub fn set_gfp_unmovable(&self) {
        // SAFETY: the mapping is valid; setting its gfp mask is a plain
        // store that page cache allocations read.
        unsafe { bindings::mapping_set_gfp_mask(self.as_raw(), bindings::GFP_HIGHUSER) };
    }

    /// Runs `f` on the owner's private data slot (`i_private_data`) under
    /// the mapping's `i_private_lock`.
    ///
    /// The slot holds `T`'s foreign representation or NULL. `f` runs under a
    /// spinlock: it must not sleep.
    ///
    /// # Safety
    ///
    /// Every user of this mapping's `i_private_data` must store a `T` there
    /// (or NULL), through this function only; whoever puts a `T` in must
    /// take it out before the inode is freed.
    pub unsafe fn with_private<T: ForeignOwnable, R>(
        &self,
        f: impl FnOnce(&mut PrivateSlot<'_, T>) -> R,
    ) -> R {
        let m = self.as_raw();
        // Raw place expressions, not references: other CPUs use these
        // fields concurrently, so a Rust reference to them would assert an
        // exclusivity (or immutability) that does not hold.
        // SAFETY: `m` is valid; `i_private_lock` is initialised with the
        // inode.
        let lock = unsafe { &raw mut (*m).i_private_lock };
        // SAFETY: as above.
        unsafe { bindings::spin_lock(lock) };
        let mut slot = PrivateSlot::<T> {
            // SAFETY: `m` is valid; the field is only accessed through the
            // slot while we hold `i_private_lock`, which protects it.
            ptr: unsafe { &raw mut (*m).i_private_data },
            _lock: core::marker::PhantomData,
            _t: core::marker::PhantomData,
        };
        let r = f(&mut slot);
        // SAFETY: taken above.
        unsafe { bindings::spin_unlock(lock) };
        r
    }

    /// Takes `invalidate_lock` for reading (`filemap_invalidate_lock_shared()`)
    /// until the guard is dropped: truncation and hole punching that hold it
    /// for writing cannot run meanwhile. May sleep.
    pub fn invalidate_lock_shared(&self) -> InvalidateLockShared<'_> {
        // SAFETY: the mapping is valid; its `invalidate_lock` is initialised
        // with the inode.
        unsafe { bindings::filemap_invalidate_lock_shared(self.as_raw()) };
        // INVARIANT: taken just above, released by the guard.
        InvalidateLockShared(self)
    }

    /// Looks up the folio at `index` in the page cache, if present (no
    /// swap-in, no allocation).
    pub fn get_folio(&self, index: usize) -> Option<crate::types::ARef<Folio>> {
        // SAFETY: the mapping is valid; `filemap_get_folio` returns a
        // referenced folio or an error pointer.
        let f = unsafe { bindings::filemap_get_folio(self.as_raw(), index as _) };
        if crate::error::from_err_ptr(f).is_err() || f.is_null() {
            return None;
        }
        // SAFETY: `filemap_get_folio` returned one reference, now owned.
        Some(unsafe { crate::types::ARef::from_raw(core::ptr::NonNull::new_unchecked(f.cast())) })
    }

    /// How many pages the page cache holds (`nrpages`): a snapshot, which
    /// may change as soon as it is read.
    pub fn nr_pages(&self) -> usize {
        // SAFETY: the mapping is valid; a racy read of a word-sized counter
        // that is only ever read as a statistic.
        unsafe { core::ptr::read_volatile(&raw const (*self.as_raw()).nrpages) as usize }
    }
}

/// `invalidate_lock` of an address space, held for reading; released when
/// dropped.
///
/// # Invariants
///
/// The lock is held for reading by this guard.
pub struct InvalidateLockShared<'a>(&'a AddressSpace);

impl Drop for InvalidateLockShared<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, the guard holds the lock for reading.
        unsafe { bindings::filemap_invalidate_unlock_shared(self.0.as_raw()) };
    }
}

/// The arguments of one `->migrate_folio` call: the mapping, the folio to
/// migrate (`src`) and the one the migration core allocated for it (`dst`),
/// both locked, and the mode.
///
/// Only the `->migrate_folio` callbacks of the kernel crate (such as
/// [`crate::shmem::VariantOps`]'s) make one, so
/// [`FolioMigration::migrate_default`] is only ever applied to the folios
/// that the migration core gave such a callback.
pub struct FolioMigration<'a> {
    mapping: &'a AddressSpace,
    dst: LockedFolio<'a>,
    src: LockedFolio<'a>,
    mode: MigrateMode,
    /// `src` was migrated: it is no longer in the page cache.
    migrated: core::cell::Cell<bool>,
}

impl<'a> FolioMigration<'a> {
    /// Wraps the arguments of a `->migrate_folio` call.
    ///
    /// # Safety
    ///
    /// Only for the arguments of a `->migrate_folio` call, for its duration
    /// `'a`: the migration core passes the mapping of `src`, whose inode it
    /// keeps alive, and `dst`, the folio it allocated for `src`, both locked
    /// and referenced.
    pub(crate) unsafe fn from_raw(
        mapping: *mut bindings::address_space,
        dst: *mut bindings::folio,
        src: *mut bindings::folio,
        mode: MigrateMode,
    ) -> Self {
        // SAFETY: as the caller promises.
        unsafe {
            Self {
                mapping: AddressSpace::from_raw(mapping),
                dst: LockedFolio::from_locked(dst),
                src: LockedFolio::from_locked(src),
                mode,
                migrated: core::cell::Cell::new(false),
            }
        }
    }

    /// The mapping `src` belongs to.
    pub fn mapping(&self) -> &'a AddressSpace {
        self.mapping
    }

    /// The new folio, for the data.
    pub fn dst(&self) -> &LockedFolio<'a> {
        &self.dst
    }

    /// The folio being migrated.
    pub fn src(&self) -> &LockedFolio<'a> {
        &self.src
    }

    /// How hard the migration may try.
    pub fn mode(&self) -> MigrateMode {
        self.mode
    }

    /// Migrates `src` to `dst` the way most filesystems do: moves the page
    /// cache entry and copies data and flags (`migrate_folio()`).
    ///
    /// Fails with `EAGAIN` when somebody else holds a reference to `src`,
    /// and once it has succeeded: `src` is then no longer in the page cache.
    pub fn migrate_default(&self) -> crate::error::Result {
        if self.migrated.get() {
            return Err(crate::error::code::EAGAIN);
        }
        // SAFETY: by the contract of `from_raw`, both folios are locked,
        // `src` belongs to `mapping` and `dst` is the folio the migration
        // core allocated for it, as `migrate_folio()` expects; `src` has not
        // been migrated yet (checked above).
        crate::error::to_result(unsafe {
            bindings::migrate_folio(
                self.mapping.as_raw(),
                self.dst.as_raw(),
                self.src.as_raw(),
                self.mode.into_raw(),
            )
        })?;
        self.migrated.set(true);
        Ok(())
    }
}

/// The `i_private_data` slot of an address space, borrowed under its lock.
///
/// # Invariants
///
/// `ptr` points to the mapping's `i_private_data`, and `i_private_lock` is
/// held for `'a`.
pub struct PrivateSlot<'a, T: ForeignOwnable> {
    ptr: *mut *mut crate::ffi::c_void,
    _lock: core::marker::PhantomData<&'a mut ()>,
    _t: core::marker::PhantomData<T>,
}

impl<T: ForeignOwnable> PrivateSlot<'_, T> {
    /// Borrows the value in the slot, if any.
    pub fn get(&self) -> Option<T::Borrowed<'_>> {
        // SAFETY: `ptr` is valid and protected by the lock we hold (type
        // invariant).
        let p = unsafe { *self.ptr };
        if p.is_null() {
            None
        } else {
            // SAFETY: a non-NULL slot holds `T::into_foreign()` output (the
            // safety contract of `with_private`), not yet taken back.
            Some(unsafe { T::borrow(p.cast_const()) })
        }
    }

    /// Stores `value`, returning the previous one.
    pub fn replace(&mut self, value: Option<T>) -> Option<T> {
        let new = value.map_or(core::ptr::null_mut(), |v| v.into_foreign().cast_mut());
        // SAFETY: `ptr` is valid and protected by the lock we hold (type
        // invariant).
        let old = unsafe { self.ptr.replace(new) };
        if old.is_null() {
            None
        } else {
            // SAFETY: `old` came from `T::into_foreign()` and is removed
            // from the slot, so it is converted back once.
            Some(unsafe { T::from_foreign(old.cast_const()) })
        }
    }
}
