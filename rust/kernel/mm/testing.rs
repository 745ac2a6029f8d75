// SPDX-License-Identifier: GPL-2.0

//! User memory for KUnit tests, doctests included.
//!
//! KUnit runs each test case in a kernel thread, which has no user address
//! space. [`vm_mmap_anon`] gives the test one, as `kunit_vm_mmap()` does
//! for C tests: the first call creates an mm and attaches it to the test's
//! thread with `kthread_use_mm()`; it goes away with the thread when the
//! test case ends. From then on [`MmWithUser::current`] returns it and
//! [`UserSlice`] accesses it, so abstractions that work on a process's
//! memory can be tested without a process.
//!
//! [`MmWithUser::current`]: super::MmWithUser::current
//! [`UserSlice`]: crate::uaccess::UserSlice
//!
//! C header: [`include/kunit/test.h`](srctree/include/kunit/test.h).

use crate::{
    bindings,
    error::{
        code::{EINVAL, ENOMEM},
        Result,
    },
    page::PAGE_SIZE,
};

/// The pages may be read.
pub const PROT_READ: u32 = bindings::PROT_READ;
/// The pages may be written.
pub const PROT_WRITE: u32 = bindings::PROT_WRITE;

/// The KUnit test the current thread runs, if any.
fn current_test() -> Result<*mut bindings::kunit> {
    // SAFETY: `kunit_get_current_test()` only reads the current task.
    let test = unsafe { bindings::kunit_get_current_test() };
    if test.is_null() {
        Err(EINVAL)
    } else {
        Ok(test)
    }
}

/// Maps `len` bytes of private anonymous memory with protection `prot` (a
/// combination of [`PROT_READ`] and [`PROT_WRITE`]) into the current KUnit
/// test's address space, creating the address space on first use, and
/// returns the address.
///
/// `EINVAL` outside a KUnit test or for a `len` that is zero or not page
/// aligned. The mapping lasts until the test case ends, or until
/// [`vm_munmap`].
///
/// # Examples
///
/// ```
/// use kernel::mm::testing;
/// use kernel::page::PAGE_SIZE;
/// use kernel::uaccess::UserSlice;
///
/// let addr = testing::vm_mmap_anon(PAGE_SIZE, testing::PROT_READ | testing::PROT_WRITE)?;
/// UserSlice::new(addr + 8, 3).writer().write_slice(b"abc")?;
/// let mut buf = [0u8; 4];
/// UserSlice::new(addr + 7, 4).reader().read_slice(&mut buf)?;
/// assert_eq!(&buf, b"\0abc");
/// testing::vm_munmap(addr, PAGE_SIZE)?;
/// assert_eq!(UserSlice::new(addr, 4).reader().read_slice(&mut buf), Err(EFAULT));
/// assert_eq!(testing::vm_mmap_anon(PAGE_SIZE + 1, testing::PROT_READ), Err(EINVAL));
/// # Ok::<(), Error>(())
/// ```
pub fn vm_mmap_anon(len: usize, prot: u32) -> Result<usize> {
    vm_mmap(len, prot, bindings::MAP_PRIVATE)
}

/// As [`vm_mmap_anon`], but shared anonymous memory
/// (`MAP_SHARED | MAP_ANONYMOUS`): pages of a shmem file, not anonymous
/// folios.
///
/// # Examples
///
/// ```
/// use kernel::mm::{testing, MmWithUser};
/// use kernel::page::PAGE_SIZE;
///
/// let addr = testing::vm_mmap_shared_anon(PAGE_SIZE, testing::PROT_READ)?;
/// let mm = MmWithUser::current().ok_or(EINVAL)?;
/// let mmap = mm.mmap_read_lock();
/// let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
/// assert!(vma.is_shared() && vma.has_file() && !vma.is_anonymous());
/// # Ok::<(), Error>(())
/// ```
pub fn vm_mmap_shared_anon(len: usize, prot: u32) -> Result<usize> {
    vm_mmap(len, prot, bindings::MAP_SHARED)
}

fn vm_mmap(len: usize, prot: u32, share: u32) -> Result<usize> {
    let test = current_test()?;
    if len == 0 || len % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    let flags = share | bindings::MAP_ANONYMOUS;
    // SAFETY: `test` is the running test, as `kunit_vm_mmap()` requires; it
    // attaches an mm to the current (test) thread if it has none, and maps
    // anonymous memory (no file) at an address of the kernel's choice.
    let addr = unsafe {
        bindings::kunit_vm_mmap(
            test,
            core::ptr::null_mut(),
            0,
            len as _,
            prot as _,
            flags as _,
            0,
        )
    } as usize;
    // `kunit_vm_mmap()` passes `vm_mmap()`'s errors through as an error
    // pointer value, and returns zero when it failed before mapping.
    let addr = crate::error::from_err_ptr(addr as *mut core::ffi::c_void)? as usize;
    if addr == 0 {
        return Err(ENOMEM);
    }
    Ok(addr)
}

/// Unmaps `[addr, addr + len)` from the current KUnit test's address space.
///
/// `EINVAL` outside a KUnit test or if the test has no address space yet.
pub fn vm_munmap(addr: usize, len: usize) -> Result {
    current_test()?;
    // SAFETY: `get_current()` returns the running task; only that task
    // changes its `mm`.
    if unsafe { (*bindings::get_current()).mm }.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: The current task has an mm, which `vm_munmap()` operates on;
    // any range is accepted and checked.
    crate::error::to_result(unsafe { bindings::vm_munmap(addr as _, len) })
}
