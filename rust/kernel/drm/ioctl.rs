// SPDX-License-Identifier: GPL-2.0

//! DRM driver ioctls.
//!
//! C header: [`include/drm/drm_ioctl.h`](srctree/include/drm/drm_ioctl.h).

use crate::bindings;

/// `DRM_RENDER_ALLOW`: the ioctl is allowed on render nodes.
pub const RENDER_ALLOW: u32 = bindings::drm_ioctl_flags_DRM_RENDER_ALLOW;

/// `DRM_IOWR(nr, T)`.
pub const fn iowr<T>(nr: u32) -> u32 {
    crate::ioctl::_IOWR::<T>(b'd' as u32, nr)
}

/// `DRM_IOW(nr, T)`.
pub const fn iow<T>(nr: u32) -> u32 {
    crate::ioctl::_IOW::<T>(b'd' as u32, nr)
}

/// Checks that ioctl `i` of a driver table has number
/// `DRM_COMMAND_BASE + i`: DRM indexes the table by number.
pub const fn check_table(table: &[bindings::drm_ioctl_desc]) -> bool {
    let mut i = 0;
    while i < table.len() {
        if crate::ioctl::_IOC_NR(table[i].cmd) != bindings::DRM_COMMAND_BASE + i as u32 {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares a driver's ioctl table, `const IOCTLS`, for
/// [`crate::drm::Driver::IOCTLS`].
///
/// Each entry is `(NAME, number, struct, flags, handler)`, in number order
/// from `DRM_COMMAND_BASE`. The number is the full ioctl code
/// ([`iowr`]/[`iow`]): its direction and size tell DRM what to copy in and
/// out. The handler is called with the device, the argument (copied into
/// the kernel, zero-extended) and the file:
/// `fn(&Device<D>, &mut Struct, &File<F>) -> Result<u32>`.
#[macro_export]
macro_rules! declare_drm_ioctls {
    ( $( ($name:ident, $cmd:expr, $struct:ty, $flags:expr, $func:expr) ),* $(,)? ) => {
        const IOCTLS: &'static [$crate::bindings::drm_ioctl_desc] = {
            const TABLE: &[$crate::bindings::drm_ioctl_desc] = &[ $(
                $crate::bindings::drm_ioctl_desc {
                    cmd: $cmd,
                    flags: $flags,
                    func: {
                        /// The C entry point of this ioctl.
                        ///
                        /// # Safety
                        ///
                        /// Called by `drm_ioctl()` only, with a device and
                        /// a file of this driver and a kernel copy of the
                        /// argument at least as large as the struct.
                        unsafe extern "C" fn entry(
                            dev: *mut $crate::bindings::drm_device,
                            data: *mut ::core::ffi::c_void,
                            file: *mut $crate::bindings::drm_file,
                        ) -> ::core::ffi::c_int {
                            const _: () = ::core::assert!(
                                ::core::mem::size_of::<$struct>() == $crate::ioctl::_IOC_SIZE($cmd)
                            );
                            // SAFETY: per the function's safety section;
                            // the argument is exclusively ours during the
                            // call and the struct has no invalid bit
                            // patterns (a uAPI struct of integers).
                            let (dev, data, file) = unsafe {
                                (
                                    $crate::drm::Device::borrow(dev),
                                    &mut *data.cast::<$struct>(),
                                    $crate::drm::file::File::borrow(file),
                                )
                            };
                            match $func(dev, data, file) {
                                Ok(r) => r as ::core::ffi::c_int,
                                Err(e) => e.to_errno(),
                            }
                        }
                        Some(entry)
                    },
                    name: $crate::c_str!(::core::stringify!($name)).as_char_ptr(),
                },
            )* ];
            ::core::assert!($crate::drm::ioctl::check_table(TABLE));
            TABLE
        };
    };
}
