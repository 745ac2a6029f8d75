// SPDX-License-Identifier: GPL-2.0

//! Lockdep maps: teach lockdep about a dependency that is not a lock it
//! sees, such as a bit lock or a wait for another subsystem's progress.
//!
//! C header: [`include/linux/lockdep.h`](srctree/include/linux/lockdep.h).

use crate::{bindings, str::CStr, sync::LockClassKey, types::Opaque};

/// A lockdep map, to be acquired and released around code that behaves like
/// it takes a lock (the C `lock_map_acquire()`/`lock_map_release()`).
///
/// Lives in a `static` and is initialised once with [`LockdepMap::init`]
/// before first use.
///
/// # Examples
///
/// ```
/// use kernel::{c_str, lockdep::LockdepMap};
///
/// static MAP: LockdepMap = LockdepMap::new();
/// MAP.init(c_str!("doctest_map"));
/// MAP.acquire();
/// MAP.release();
/// ```
pub struct LockdepMap {
    map: Opaque<bindings::lockdep_map>,
    key: LockClassKey,
}

// SAFETY: lockdep maps are designed for concurrent use; lockdep keeps its
// own state per task.
unsafe impl Sync for LockdepMap {}

impl LockdepMap {
    /// An uninitialised map, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            map: Opaque::uninit(),
            // SAFETY: lockdep expects a static `lock_class_key` to be
            // uninitialised memory, as `static_lock_class!` does.
            key: unsafe { core::mem::MaybeUninit::uninit().assume_init() },
        }
    }

    /// Initialises the map with `name` as its class name. Call once,
    /// before any `acquire`.
    pub fn init(&'static self, name: &'static CStr) {
        // SAFETY: `self` is static, so the map and key outlive lockdep's
        // use of them; `name` is a static C string.
        unsafe {
            bindings::lockdep_init_map(self.map.get(), name.as_char_ptr(), self.key.as_ptr())
        };
    }

    /// Tells lockdep the "lock" is taken.
    pub fn acquire(&self) {
        // SAFETY: the map is initialised (documented precondition; lockdep
        // reports use of an uninitialised map rather than misbehaving).
        unsafe { bindings::lock_map_acquire(self.map.get()) };
    }

    /// Tells lockdep the "lock" is released.
    pub fn release(&self) {
        // SAFETY: as for `acquire`.
        unsafe { bindings::lock_map_release(self.map.get()) };
    }
}

/// Prints a warning with a backtrace and taints the kernel (C `WARN()`): for
/// conditions that are bugs of the caller of an API, which must not crash
/// the kernel but must be found.
pub fn warn(msg: &CStr) {
    // SAFETY: `msg` is NUL terminated; it is printed with "%s".
    unsafe { bindings::warn(msg.as_char_ptr()) };
}
