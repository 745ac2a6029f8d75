//! gemfs and softgpu as modules (the test kernel builds them so and the
//! guest's init loads them from /kmod, in the order of /kmod/load-order):
//! unloading one while something uses it is refused, unloading both once
//! idle leaves nothing of theirs behind (the init's final kmemleak scan
//! covers their memory), and they load again. Every test starts and ends
//! with all of them loaded; the tests after this binary find them so.

use softgpu::Device;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const GEMFS: &str = "gemfs";
const SOFTGPU: &str = "softgpu";

fn loaded(name: &str) -> bool {
    Path::new(&format!("/sys/module/{name}/initstate")).exists()
}

fn refcnt(name: &str) -> u32 {
    let path = format!("/sys/module/{name}/refcnt");
    let s = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    s.trim().parse().unwrap()
}

/// delete_module(2), as rmmod: fails at once (EWOULDBLOCK) if in use.
fn rmmod(name: &str) -> io::Result<()> {
    let c = CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// finit_module(2) of /kmod/<name>.ko, as insmod.
fn insmod(name: &str) -> io::Result<()> {
    let f = fs::File::open(format!("/kmod/{name}.ko"))?;
    // SAFETY: a valid fd and an empty, NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn assert_refused(name: &str, why: &str) {
    let before = refcnt(name);
    let err = rmmod(name).expect_err(&format!("{name} unloaded while {why}"));
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EWOULDBLOCK),
        "rmmod {name} while {why}: {err}"
    );
    assert!(loaded(name), "{name} still loaded");
    assert_eq!(refcnt(name), before, "a refused rmmod changes no count");
}

/// The project's modules, in load order (gemfs first).
fn load_order() -> Vec<String> {
    fs::read_to_string("/kmod/load-order")
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// All loaded, as the init left them. The test kernel builds gemfs and
/// softgpu as modules: a kernel that builds them in fails here rather than
/// passing with nothing tested.
fn modular() -> bool {
    let order = load_order();
    assert!(
        order.iter().any(|m| m == GEMFS),
        "gemfs is not a module of this kernel (/kmod/load-order: {order:?})"
    );
    assert!(
        order.iter().any(|m| m == SOFTGPU),
        "softgpu is a module too"
    );
    for m in &order {
        assert!(loaded(m), "the init loaded {m}");
    }
    true
}

/// Unloads the modules that use gemfs other than softgpu (test modules).
fn unload_others() {
    for m in load_order().iter().rev() {
        if m != GEMFS && m != SOFTGPU && loaded(m) {
            rmmod(m).unwrap_or_else(|e| panic!("rmmod {m}: {e}"));
        }
    }
}

/// Loads again whatever is not loaded.
fn load_all() {
    for m in load_order() {
        if !loaded(&m) {
            insmod(&m).unwrap_or_else(|e| panic!("insmod {m}: {e}"));
        }
    }
}

fn mounted(fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(fstype))
}

fn mount_gemfs(dir: &str) {
    fs::create_dir_all(dir).unwrap();
    let (src, dir, ty) = (c"gemfs", CString::new(dir).unwrap(), c"gemfs");
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let r = unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    assert_eq!(r, 0, "mount -t gemfs: {}", io::Error::last_os_error());
}

fn umount(dir: &str) {
    let c = CString::new(dir).unwrap();
    // SAFETY: a NUL-terminated string that outlives the call.
    assert_eq!(unsafe { libc::umount(c.as_ptr()) }, 0, "umount {dir}");
}

#[test]
fn softgpu_in_use_is_not_unloaded() {
    if !modular() {
        return;
    }
    // softgpu's symbols are gemfs's users.
    assert_refused(GEMFS, "softgpu is loaded");

    let dev = Device::open().unwrap();
    assert_refused(SOFTGPU, "a render node is open");

    // A dma-buf of a BO outlives the DRM file, and needs the driver.
    let bo = dev.create_bo(1 << 20, 0).unwrap();
    let buf = dev.prime_export(bo).unwrap();
    drop(dev);
    assert_refused(SOFTGPU, "a dma-buf of one of its BOs is open");
    drop(buf);
    assert_eq!(refcnt(SOFTGPU), 0, "every file closed");
}

#[test]
fn a_mounted_gemfs_is_not_unloaded() {
    if !modular() {
        return;
    }
    unload_others();
    rmmod(SOFTGPU).expect("rmmod softgpu, unused");
    let dir = "/tmp/modules-gemfs";
    mount_gemfs(dir);
    fs::write(format!("{dir}/f"), vec![0x5a; 1 << 20]).unwrap();
    // The superblock holds the file_system_type's owner.
    assert_refused(GEMFS, "a gemfs mount is in use");
    umount(dir);
    rmmod(GEMFS).expect("rmmod gemfs once unmounted");
    load_all();
}

#[test]
fn a_bo_mapping_keeps_gemfs_but_not_softgpu() {
    if !modular() {
        return;
    }
    // A BO's CPU mapping is of its gemfs file: once the DRM file and the BO
    // are gone it no longer needs softgpu, but still needs gemfs.
    let dev = Device::open().unwrap();
    let bo = dev.create_bo(1 << 20, 0).unwrap();
    let mut map = dev.mmap_bo(bo, 1 << 20).unwrap();
    map.as_mut_slice().fill(0xa5);
    dev.close_bo(bo).unwrap();
    drop(dev);
    unload_others();
    rmmod(SOFTGPU).expect("rmmod softgpu with only a BO mapping left");
    assert!(map.as_slice().iter().all(|&b| b == 0xa5), "the data stays");
    assert_refused(GEMFS, "a mapping of a gemfs file exists");
    drop(map);
    rmmod(GEMFS).expect("rmmod gemfs once unmapped");
    load_all();
}

#[test]
fn unloaded_modules_leave_nothing_behind_and_load_again() {
    if !modular() {
        return;
    }
    // Use both first, so that there is something to clean up.
    {
        let dev = Device::open().unwrap();
        for _ in 0..4 {
            let bo = dev.create_bo(1 << 20, 0).unwrap();
            dev.mmap_bo(bo, 1 << 20).unwrap().as_mut_slice().fill(1);
        }
    }
    unload_others();
    rmmod(SOFTGPU).expect("rmmod softgpu");
    rmmod(GEMFS).expect("rmmod gemfs");
    assert!(!loaded(SOFTGPU) && !loaded(GEMFS));
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap();
    assert!(
        !filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("gemfs")),
        "gemfs unregistered: {filesystems}"
    );
    assert!(!mounted("gemfs"), "no gemfs mount left");
    assert!(
        !Path::new("/sys/kernel/debug/gemfs").exists(),
        "gemfs debugfs gone"
    );
    assert!(
        !Path::new("/sys/bus/platform/devices/softgpu").exists(),
        "device gone"
    );
    for e in fs::read_dir("/sys/kernel/debug/dri").unwrap() {
        let name = fs::read_to_string(e.unwrap().path().join("name")).unwrap_or_default();
        assert!(
            !name.starts_with(SOFTGPU),
            "softgpu's DRM debugfs left: {name}"
        );
    }
    assert!(Device::open().is_err(), "no softgpu node");

    load_all();
    let dev = Device::open().expect("softgpu's node after reloading");
    let bo = dev.create_bo(1 << 20, 0).unwrap();
    let mut map = dev.mmap_bo(bo, 1 << 20).unwrap();
    map.as_mut_slice().fill(7);
    assert!(map.as_slice().iter().all(|&b| b == 7));
    assert!(Path::new("/sys/kernel/debug/gemfs/unheld_migrated").exists());
}

/// `struct sync_fence_info` (include/uapi/linux/sync_file.h).
#[repr(C)]
#[derive(Default)]
struct SyncFenceInfo {
    obj_name: [u8; 32],
    driver_name: [u8; 32],
    status: i32,
    flags: u32,
    timestamp_ns: u64,
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Default)]
struct SyncFileInfo {
    name: [u8; 32],
    status: i32,
    flags: u32,
    num_fences: u32,
    pad: u32,
    sync_fence_info: u64,
}

/// `SYNC_IOC_FILE_INFO`: `_IOWR('>', 4, struct sync_file_info)`.
const SYNC_IOC_FILE_INFO: libc::c_ulong = 0xc038_3e04;

/// What SYNC_IOC_FILE_INFO says of a sync_file of one fence: the fence's
/// timeline and driver names, as the kernel asks the fence for them, and
/// its status (1: signalled).
fn sync_file_info(fd: &impl AsRawFd) -> (String, String, i32) {
    let mut fence = SyncFenceInfo::default();
    let mut info = SyncFileInfo {
        num_fences: 1,
        sync_fence_info: &raw mut fence as u64,
        ..Default::default()
    };
    // SAFETY: `info` and the one `fence` it points to outlive the call,
    // which writes within their sizes (num_fences = 1).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SYNC_IOC_FILE_INFO, &raw mut info) };
    assert_eq!(r, 0, "SYNC_IOC_FILE_INFO: {}", io::Error::last_os_error());
    assert_eq!(info.num_fences, 1, "fences in the job's sync_file");
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    (
        text(&fence.obj_name),
        text(&fence.driver_name),
        fence.status,
    )
}

/// A job's fence outlives softgpu in a sync_file: softgpu unloads once its
/// files are closed (the fence does not keep it), and the sync_file still
/// answers SYNC_IOC_FILE_INFO, which asks the fence for its names: each
/// fence has its own copy of them, since softgpu's strings go with the
/// module.
#[test]
fn a_jobs_fence_outlives_softgpu_in_a_sync_file() {
    modular();
    const VA: u64 = 1 << 32;
    let fence = {
        let dev = Device::open().unwrap();
        let bo = dev.create_bo(1 << 20, 0).unwrap();
        dev.bind(bo, VA, 0, 1 << 20, 0).unwrap();
        let cmd = softgpu::Cmd::fill(VA, 4096, 0x5eed);
        let (seqno, fd) = dev.exec(&[cmd], softgpu::SOFTGPU_EXEC_FENCE_OUT).unwrap();
        let (status, _) = dev.wait(seqno, Device::RUN_TIMEOUT_NS).unwrap();
        assert_eq!(status, 0, "the job");
        fd.expect("EXEC with FENCE_OUT gives a sync_file")
    };
    let names = ("softgpu-engine".to_string(), "softgpu".to_string(), 1);
    assert_eq!(sync_file_info(&fence), names, "while softgpu is loaded");
    unload_others();
    rmmod(SOFTGPU).expect("rmmod softgpu with only a sync_file of its fence left");
    assert_eq!(sync_file_info(&fence), names, "after softgpu's unload");
    drop(fence);
    load_all();
}
