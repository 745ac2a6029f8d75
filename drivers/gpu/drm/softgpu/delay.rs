// SPDX-License-Identifier: GPL-2.0

//! Sleeping for a while, for the engine's busy command and for the paths
//! that wait for invalidations to finish.

use kernel::bindings;

/// Sleeps for `us` microseconds, uninterruptibly. Only where sleeping is
/// allowed: the engine's work item, and submission's fault paths.
pub(crate) fn usleep(us: u64) {
    // SAFETY: `usleep_range_state()` may be called wherever sleeping is
    // allowed, which callers ensure; it has no other requirement.
    unsafe { bindings::usleep_range_state(us as _, us as _, bindings::TASK_UNINTERRUPTIBLE) };
}
