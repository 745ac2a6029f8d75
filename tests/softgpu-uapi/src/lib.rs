//! See tests/uapi/: the softgpu uAPI exercised from userspace, as root in
//! the guest, one integration-test binary (tests/uapi/main.rs and its
//! modules).
