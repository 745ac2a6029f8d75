// SPDX-License-Identifier: GPL-2.0

//! Page migration.
//!
//! C header: [`include/linux/migrate.h`](srctree/include/linux/migrate.h).

use crate::bindings;

/// How hard a migration may try (`enum migrate_mode`).
///
/// # Examples
///
/// ```
/// use kernel::mm::migrate::MigrateMode;
///
/// assert!(!MigrateMode::Async.may_block());
/// assert!(MigrateMode::SyncLight.may_block());
/// assert_eq!(MigrateMode::from_raw(MigrateMode::Sync.into_raw()), Some(MigrateMode::Sync));
/// assert_eq!(MigrateMode::from_raw(42), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateMode {
    /// Never block: compaction's first, opportunistic pass.
    Async,
    /// May block on most things, but not on writeback.
    SyncLight,
    /// May block.
    Sync,
}

impl MigrateMode {
    /// Converts from the C enum; `None` for a value this kernel does not
    /// define.
    pub fn from_raw(mode: bindings::migrate_mode) -> Option<Self> {
        match mode {
            bindings::migrate_mode_MIGRATE_ASYNC => Some(Self::Async),
            bindings::migrate_mode_MIGRATE_SYNC_LIGHT => Some(Self::SyncLight),
            bindings::migrate_mode_MIGRATE_SYNC => Some(Self::Sync),
            _ => None,
        }
    }

    /// Converts to the C enum.
    pub fn into_raw(self) -> bindings::migrate_mode {
        match self {
            Self::Async => bindings::migrate_mode_MIGRATE_ASYNC,
            Self::SyncLight => bindings::migrate_mode_MIGRATE_SYNC_LIGHT,
            Self::Sync => bindings::migrate_mode_MIGRATE_SYNC,
        }
    }

    /// Whether the migration may sleep.
    pub fn may_block(self) -> bool {
        self != Self::Async
    }
}

/// The references `folio` is expected to have from the page cache or swap
/// cache, its private data and the page tables mapping it: what migration
/// finds on a folio that nobody else uses, not counting the caller's own
/// references (such as migration's isolation). See
/// `folio_expected_ref_count()`. Stable only for a locked, unmapped folio.
pub fn expected_ref_count(folio: &crate::folio::Folio) -> usize {
    // SAFETY: `folio` is a valid folio; the function only reads its flags,
    // mapping and map counts.
    let n = unsafe { bindings::folio_expected_ref_count(folio.as_raw()) };
    n as usize
}

/// Migrates `folio` to NUMA node `nid` through the kernel's migration core
/// (isolation, unmapping, `->migrate_folio`, remapping), as `move_pages(2)`
/// would for a mapped folio.
///
/// Takes the caller's reference: migration only succeeds when nobody but
/// the page cache (or the page tables) and the isolation holds the folio,
/// so the reference is dropped once the folio is isolated.
///
/// Returns `Ok(())` once the folio's contents live in a new folio on `nid`;
/// the old folio is then freed when its last reference goes. Fails with
/// `EBUSY` if the folio cannot be isolated (not on the LRU, or being
/// isolated by somebody else) and with the migration's error otherwise.
///
/// Only for built-in code: the migration core does not export these
/// functions to modules.
pub fn migrate_to_node(
    folio: crate::types::ARef<crate::folio::Folio>,
    nid: i32,
    mode: MigrateMode,
) -> crate::error::Result {
    use crate::error::code::{EAGAIN, EBUSY};

    // Newly added folios may still sit in per-CPU LRU batches, where
    // isolation cannot find them.
    // SAFETY: may sleep; we are in process context (the caller holds a
    // reference to a folio, which the drain does not touch).
    unsafe { bindings::lru_add_drain_all() };
    let mut list = core::mem::MaybeUninit::<bindings::list_head>::uninit();
    let list = list.as_mut_ptr();
    // SAFETY: `list` is a local that does not move until we return; an
    // empty list points to itself.
    unsafe {
        (*list).next = list;
        (*list).prev = list;
    }
    // SAFETY: the caller's reference keeps `folio` alive; isolation takes a
    // reference of its own for as long as the folio is on `list`.
    if !unsafe { bindings::isolate_folio_to_list(folio.as_raw(), list) } {
        return Err(EBUSY);
    }
    // The isolation holds the folio now.
    drop(folio);
    let mut succeeded: crate::ffi::c_uint = 0;
    // SAFETY: `list` holds the isolated folio; the callbacks match
    // `new_folio_t`/`free_folio_t` (NULL free uses `folio_put`); `nid` is
    // passed through `private` to `alloc_on_node`.
    let ret = unsafe {
        bindings::migrate_pages(
            list,
            Some(alloc_on_node),
            None,
            nid as crate::ffi::c_ulong,
            mode.into_raw(),
            bindings::migrate_reason_MR_SYSCALL as _,
            &mut succeeded,
        )
    };
    if ret != 0 {
        // SAFETY: folios that failed to migrate are back on `list`, still
        // isolated; putting them back is the caller's job.
        unsafe { bindings::putback_movable_pages(list) };
    }
    match ret {
        0 => Ok(()),
        r if r < 0 => Err(crate::error::Error::from_errno(r)),
        _ => Err(EAGAIN),
    }
}

/// The `new_folio_t` of [`migrate_to_node`]: a folio of the source's order
/// on node `private`.
///
/// # Safety
///
/// Called by the migration core only, with an isolated source folio.
unsafe extern "C" fn alloc_on_node(
    src: *mut bindings::folio,
    private: crate::ffi::c_ulong,
) -> *mut bindings::folio {
    let gfp = bindings::GFP_HIGHUSER_MOVABLE | bindings::__GFP_THISNODE | bindings::__GFP_NOWARN;
    // SAFETY: the migration core passes the isolated source folio, which
    // it holds; we only read its order.
    let order = unsafe { bindings::folio_order(src) };
    // SAFETY: any flags and order are accepted; failure returns NULL, which
    // the core handles as -ENOMEM for this folio.
    unsafe { bindings::folio_alloc_node(gfp, order, private as i32) }
}

/// Whether NUMA node `nid` exists and has memory.
pub fn node_has_memory(nid: i32) -> bool {
    // SAFETY: the helper checks the range of `nid` before looking it up.
    unsafe { bindings::node_state_memory(nid) }
}
