//! `mount -t gemfs` in the guest: it must behave exactly like tmpfs.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 4096;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A gemfs mount on a fresh directory, unmounted on drop.
struct Mount {
    dir: PathBuf,
}

fn mount_raw(dir: &Path, opts: &str) -> io::Result<()> {
    mount_fs("gemfs", dir, opts)
}

/// mount(2) of a new `fstype` instance on `dir`.
fn mount_fs(fstype: &str, dir: &Path, opts: &str) -> io::Result<()> {
    let src = CString::new(fstype).unwrap();
    let target = CString::new(dir.to_str().unwrap()).unwrap();
    let data = CString::new(opts).unwrap();
    // SAFETY: all pointers are valid C strings for the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Mount {
    fn new(opts: &str) -> io::Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/gemfs-fs-{}",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        mount_raw(&dir, opts)?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates file `name` of `len` bytes, open for reading and writing.
    fn file(&self, name: &str, len: u64) -> File {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))
            .unwrap();
        f.set_len(len).unwrap();
        f
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.dir.to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        let r = unsafe { libc::umount(target.as_ptr()) };
        assert_eq!(r, 0, "umount: {}", io::Error::last_os_error());
    }
}

fn is_mounted(dir: &Path) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir.to_str().unwrap()))
}

/// A shared mapping of `len` bytes of `f`, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(f: &File, len: usize) -> Self {
        // SAFETY: a fresh shared mapping of an open file; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        Self { ptr: p.cast(), len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, and
        // only this test touches it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn registered_as_a_filesystem() {
    let fss = fs::read_to_string("/proc/filesystems").unwrap();
    assert!(fss.lines().any(|l| l == "nodev\tgemfs"), "{fss}");
}

#[test]
fn statfs_reports_tmpfs_and_size() {
    let m = Mount::new("size=8m").unwrap();
    let dir = CString::new(m.dir.to_str().unwrap()).unwrap();
    // SAFETY: `st` is written by statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output buffer.
    assert_eq!(unsafe { libc::statfs(dir.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_type, TMPFS_MAGIC);
    assert_eq!(st.f_blocks as u64 * st.f_bsize as u64, 8 << 20);
}

#[test]
fn write_then_read_back() {
    let m = Mount::new("").unwrap();
    let data = pattern(1 << 20, 7);
    fs::write(m.path("a"), &data).unwrap();
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    assert_eq!(fs::metadata(m.path("a")).unwrap().len(), 1 << 20);
}

#[test]
fn mmap_writes_are_seen_by_read_and_back() {
    let m = Mount::new("").unwrap();
    let f = m.file("a", 4 * PAGE as u64);
    let mut map = Map::new(&f, 4 * PAGE);
    let data = pattern(4 * PAGE, 3);
    map.bytes().copy_from_slice(&data);
    let mut back = vec![0u8; 4 * PAGE];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, data);
    f.write_all_at(b"pwrite", 2 * PAGE as u64 + 5).unwrap();
    assert_eq!(&map.bytes()[2 * PAGE + 5..2 * PAGE + 11], b"pwrite");
}

#[test]
fn truncate_down_and_up_while_mapped() {
    let m = Mount::new("").unwrap();
    let f = m.file("a", 4 * PAGE as u64);
    let mut map = Map::new(&f, 4 * PAGE);
    map.bytes().fill(0xee);
    f.set_len(PAGE as u64).unwrap();
    assert_eq!(f.metadata().unwrap().len(), PAGE as u64);
    assert!(map.bytes()[..PAGE].iter().all(|&b| b == 0xee));
    // Growing again exposes zeroes, not the old contents.
    f.set_len(4 * PAGE as u64).unwrap();
    assert!(map.bytes()[PAGE..].iter().all(|&b| b == 0));
    let mut back = vec![1u8; PAGE];
    f.read_exact_at(&mut back, 3 * PAGE as u64).unwrap();
    assert!(back.iter().all(|&b| b == 0));
}

#[test]
fn fallocate_punch_hole_and_seek() {
    let m = Mount::new("").unwrap();
    let mut f = m.file("a", 0);
    let len = 64 * PAGE as i64;
    // SAFETY: plain syscall on an open fd.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) }, 0);
    assert_eq!(f.metadata().unwrap().len(), len as u64);
    assert!(f.metadata().unwrap().blocks() * 512 >= len as u64);
    f.write_all(&pattern(len as usize, 1)).unwrap();
    let blocks = f.metadata().unwrap().blocks();
    // SAFETY: as above.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            16 * PAGE as i64,
            16 * PAGE as i64,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(
        f.metadata().unwrap().blocks(),
        blocks - 16 * PAGE as u64 / 512
    );
    assert_eq!(f.metadata().unwrap().len(), len as u64);
    let mut hole = vec![1u8; 16 * PAGE];
    f.read_exact_at(&mut hole, 16 * PAGE as u64).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    // SAFETY: as above.
    let h = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert_eq!(h, 16 * PAGE as i64);
    // SAFETY: as above.
    let d = unsafe { libc::lseek(f.as_raw_fd(), h, libc::SEEK_DATA) };
    assert_eq!(d, 32 * PAGE as i64);
    f.seek(SeekFrom::Start(0)).unwrap();
}

#[test]
fn unlink_while_open_and_mapped_keeps_data_then_frees_it() {
    let m = Mount::new("size=4m").unwrap();
    let f = m.file("a", 2 << 20);
    let mut map = Map::new(&f, 2 << 20);
    map.bytes().fill(0x42);
    fs::remove_file(m.path("a")).unwrap();
    assert!(!m.path("a").exists());
    let mut back = vec![0u8; 4096];
    (&f).read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x42));
    assert!(map.bytes().iter().all(|&b| b == 0x42));
    drop(map);
    drop(f);
    // The space is back: a new 3 MiB file fits in the 4 MiB mount.
    fs::write(m.path("b"), vec![1u8; 3 << 20]).unwrap();
}

#[test]
fn size_limit_gives_enospc() {
    let m = Mount::new("size=1m").unwrap();
    let mut f = File::create(m.path("a")).unwrap();
    let err = f.write_all(&vec![0u8; 2 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert!(f.metadata().unwrap().len() <= 1 << 20);
}

#[test]
fn nr_inodes_limit_gives_enospc() {
    let m = Mount::new("nr_inodes=3").unwrap();
    // The root directory takes one inode.
    File::create(m.path("a")).unwrap();
    File::create(m.path("b")).unwrap();
    let err = File::create(m.path("c")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
}

#[test]
fn mode_uid_gid_apply_to_the_root() {
    let m = Mount::new("mode=0710,uid=123,gid=456").unwrap();
    let md = fs::metadata(&m.dir).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o710);
    assert_eq!((md.uid(), md.gid()), (123, 456));
}

#[test]
fn noswap_is_accepted() {
    let m = Mount::new("noswap").unwrap();
    assert!(fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.contains(m.dir.to_str().unwrap()) && l.contains("noswap")));
}

#[test]
fn huge_always_maps_huge_folios() {
    let m = Mount::new("huge=always").unwrap();
    let len = 8 << 20;
    let f = m.file("a", len as u64);
    let mut map = Map::new(&f, len);
    map.bytes().fill(0x5a);
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{:x}-", map.ptr as usize);
    let block: Vec<&str> = smaps
        .split('\n')
        .skip_while(|l| !l.starts_with(&start))
        .take_while(|l| l.starts_with(&start) || !l.contains('-') || l.contains(':'))
        .collect();
    let pmd_kb: u64 = block
        .iter()
        .find(|l| l.starts_with("ShmemPmdMapped:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ShmemPmdMapped for our mapping:\n{}", block.join("\n")));
    assert!(pmd_kb >= 2048, "huge=always mapped {pmd_kb} kB with PMDs");
}

#[test]
fn bad_mount_options_are_rejected_and_mount_nothing() {
    for opts in [
        "size=banana",
        "huge=sometimes",
        "nr_inodes=12x",
        "no_such_option=1",
        "mode=99999",
    ] {
        let dir = PathBuf::from(format!("/tmp/gemfs-bad-{}", opts.len()));
        fs::create_dir_all(&dir).unwrap();
        let err = mount_raw(&dir, opts).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "option {opts}");
        assert!(!is_mounted(&dir), "option {opts} left a mount");
    }
}

/// The value in kB of `field` (e.g. "Swap:") in our smaps entry for `addr`.
fn smaps_kb(addr: usize, field: &str) -> u64 {
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{addr:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
    assert!(lines.next().is_some(), "no smaps entry at {addr:x}");
    lines
        .take_while(|l| l.contains(':') && !l.contains(" rw") && !l.contains(" r-"))
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in smaps entry at {addr:x}"))
}

/// Writes a pattern through a mapping and pages it out with MADV_PAGEOUT;
/// returns (kB swapped out, mapping, file).
fn page_out(m: &Mount, len: usize, seed: u8) -> (u64, Map, File) {
    let f = m.file("a", len as u64);
    let mut map = Map::new(&f, len);
    map.bytes().copy_from_slice(&pattern(len, seed));
    // SAFETY: advice on our own mapping.
    let r = unsafe { libc::madvise(map.ptr.cast(), len, libc::MADV_PAGEOUT) };
    assert_eq!(r, 0, "MADV_PAGEOUT: {}", io::Error::last_os_error());
    let swapped = smaps_kb(map.ptr as usize, "Swap:");
    (swapped, map, f)
}

#[test]
fn idle_file_swaps_out_and_back_in_intact() {
    let m = Mount::new("").unwrap();
    let len = 16 << 20;
    let (swapped_kb, mut map, f) = page_out(&m, len, 9);
    // Reclaim may skip a few folios (still in an LRU batch, say), not most.
    assert!(
        swapped_kb * 1024 >= len as u64 / 2,
        "only {swapped_kb} kB of 16 MiB swapped out"
    );
    let mut back = vec![0u8; len];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(
        back == pattern(len, 9),
        "contents read back from swap differ"
    );
    assert!(
        map.bytes() == &pattern(len, 9)[..],
        "contents faulted back from swap differ"
    );
}

#[test]
fn noswap_mount_never_swaps() {
    let m = Mount::new("noswap").unwrap();
    let len = 4 << 20;
    let (swapped_kb, mut map, _f) = page_out(&m, len, 4);
    assert_eq!(swapped_kb, 0);
    assert!(map.bytes() == &pattern(len, 4)[..]);
}

/// A status entry move_pages() did not write.
const NOT_MOVED: i32 = i32::MIN;

/// move_pages(2) on `pages` pages at `addr` to `node`; returns the status
/// of each page: its node, a negative errno, or `NOT_MOVED` for pages of a
/// batch whose migration failed (counted in move_pages()'s return value).
fn move_to_node(addr: *mut u8, pages: usize, node: i32) -> Vec<i32> {
    let mut ptrs: Vec<*mut libc::c_void> = (0..pages)
        .map(|i| addr.wrapping_add(i * PAGE).cast())
        .collect();
    let nodes = vec![node; pages];
    let mut status = vec![NOT_MOVED; pages];
    // SAFETY: three arrays of `pages` elements each; pid 0 is us;
    // MPOL_MF_MOVE = 2.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages,
            ptrs.as_mut_ptr(),
            nodes.as_ptr(),
            status.as_mut_ptr(),
            2,
        )
    };
    assert!(r >= 0, "move_pages: {}", io::Error::last_os_error());
    status
}

/// Migration of a mapped gemfs file races truncation, hole punching,
/// rewrites and unlink of its name. The debug kernel judges the races
/// (KASAN, lockdep, DEBUG_VM); afterwards the file migrates whole and
/// keeps its data.
#[test]
fn migration_races_truncate_punch_and_unlink() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const PAGES: usize = 64;
    let m = Mount::new("").unwrap();
    let f = Arc::new(m.file("a", (PAGES * PAGE) as u64));
    let mut map = Map::new(&f, PAGES * PAGE);
    map.bytes().fill(1);
    let addr = map.ptr as usize;
    let stop = Arc::new(AtomicBool::new(false));

    let migrator = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut moved = 0usize;
            let mut round: i32 = 0;
            while !stop.load(Ordering::Relaxed) || round < 20 {
                // Map what exists now. MADV_POPULATE_READ (22) fails with
                // EFAULT, rather than raising SIGBUS, past a racing EOF.
                // SAFETY: advice on our own mapping.
                unsafe { libc::madvise(addr as *mut libc::c_void, PAGES * PAGE, 22) };
                // Pages truncated away meanwhile report -ENOENT or -EFAULT;
                // mapped ones their new node. A batch whose migration
                // failed transiently (a page locked or referenced by the
                // racing truncation) is counted in move_pages()'s positive
                // return and its status entries are left untouched
                // (NOT_MOVED here). A page the truncation has isolated or
                // locked at that moment is -EBUSY ("busy and cannot be
                // moved", move_pages(2)).
                let status = move_to_node(addr as *mut u8, PAGES, round % 2);
                for s in status {
                    assert!(
                        s >= 0
                            || s == -libc::ENOENT
                            || s == -libc::EFAULT
                            || s == -libc::EBUSY
                            || s == NOT_MOVED,
                        "status {s}"
                    );
                    if s == round % 2 {
                        moved += 1;
                    }
                }
                round += 1;
                if round > 400 {
                    break;
                }
            }
            moved
        })
    };
    for i in 0..60u64 {
        let len = ((i * 7) % PAGES as u64 + 1) * PAGE as u64;
        f.set_len(len).unwrap();
        // SAFETY: plain syscall on an open fd.
        unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                (PAGE * 2) as i64,
            )
        };
        f.set_len((PAGES * PAGE) as u64).unwrap();
        f.write_all_at(&pattern(PAGE, i as u8), (i % PAGES as u64) * PAGE as u64)
            .unwrap();
        if i % 10 == 0 {
            fs::remove_file(m.path("a")).unwrap();
            File::create(m.path("a")).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let moved = migrator.join().unwrap();
    assert!(moved > 0, "no page migrated during the race");

    // Settle: every page present, tagged, then migrated both ways intact.
    for i in 0..PAGES {
        f.write_all_at(&pattern(PAGE, i as u8), (i * PAGE) as u64)
            .unwrap();
    }
    // Fault every page in: move_pages only moves mapped pages.
    for i in 0..PAGES {
        // SAFETY: within the mapping, which the file covers again.
        unsafe { std::ptr::read_volatile(map.ptr.add(i * PAGE)) };
    }
    for node in [1, 0] {
        let status = move_to_node(map.ptr, PAGES, node);
        assert!(status.iter().all(|&s| s == node), "statuses {status:?}");
    }
    for i in 0..PAGES {
        assert!(
            map.bytes()[i * PAGE..(i + 1) * PAGE] == pattern(PAGE, i as u8)[..],
            "page {i}"
        );
    }
}

/// Writes `what` to `/proc/self/<file>`, as `_exit(2)` on failure: for a
/// forked child setting up its user namespace.
fn child_write(file: &str, what: &str) {
    if fs::write(format!("/proc/self/{file}"), what).is_err() {
        // SAFETY: ends the child.
        unsafe { libc::_exit(2) };
    }
}

/// In a child, a new user namespace (its root mapped to ours) with a mount
/// namespace it owns: `then` runs there and its value is the exit code.
fn in_user_namespace(then: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes syscalls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: unshare(2) with namespace flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            // SAFETY: ends the child.
            unsafe { libc::_exit(3) };
        }
        child_write("setgroups", "deny");
        child_write("uid_map", "0 0 1");
        child_write("gid_map", "0 0 1");
        let code = then();
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: reaping our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// tmpfs's type has FS_USERNS_MOUNT and FS_ALLOW_IDMAP, and gemfs is tmpfs
/// in every respect but migration: a user namespace's root mounts both
/// (fstests' idmapped-mount tests found gemfs refusing), and a mount of
/// either can be idmapped (mount_setattr(MOUNT_ATTR_IDMAP)).
#[test]
fn user_namespaces_mount_it_and_idmap_it_as_tmpfs() {
    for fstype in ["tmpfs", "gemfs"] {
        let dir = format!("/tmp/userns-{fstype}");
        fs::create_dir_all(&dir).unwrap();
        let code = in_user_namespace(|| match mount_fs(fstype, Path::new(&dir), "size=1m") {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(1).min(255),
        });
        assert_eq!(
            code, 0,
            "{fstype} mounted in a user namespace: errno {code}"
        );
    }

    // An idmapped clone of a mount, with the mapping of a user namespace
    // that a child holds open (its root is our uid 0).
    // `ready`: the child to us, once its namespace is set up; `go`: us to
    // the child, once we are done with it.
    let (mut ready, mut go) = ([0; 2], [0; 2]);
    // SAFETY: each array has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes syscalls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: as in_user_namespace(); then wait for the parent's byte.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(3);
            }
            child_write("setgroups", "deny");
            child_write("uid_map", "0 0 1");
            child_write("gid_map", "0 0 1");
            let mut b = 0u8;
            libc::write(ready[1], c"r".as_ptr().cast(), 1);
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let mut b = 0u8;
    // SAFETY: reading one byte into `b`.
    assert_eq!(
        unsafe { libc::read(ready[0], (&mut b as *mut u8).cast(), 1) },
        1
    );
    let userns = File::open(format!("/proc/{pid}/ns/user")).expect("the child's user namespace");
    let mut results = Vec::new();
    for fstype in ["tmpfs", "gemfs"] {
        let m = if fstype == "gemfs" {
            Mount::new("size=1m").unwrap()
        } else {
            let dir = PathBuf::from("/tmp/idmap-tmpfs");
            fs::create_dir_all(&dir).unwrap();
            mount_fs("tmpfs", &dir, "size=1m").expect("mounting tmpfs");
            Mount { dir }
        };
        let d = CString::new(m.dir.to_str().unwrap()).unwrap();
        // SAFETY: open_tree(2) of a path, cloning the mount detached.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                d.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
            )
        };
        assert!(
            tree >= 0,
            "open_tree of {fstype}: {}",
            io::Error::last_os_error()
        );
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: 0x0010_0000, // MOUNT_ATTR_IDMAP
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr(2) on the detached tree, with `attr` valid
        // for its size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        results.push((
            fstype,
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        ));
        // SAFETY: closing the tree's descriptor (unmounts the detached clone).
        unsafe { libc::close(tree as i32) };
        drop(m);
    }
    // SAFETY: releasing and reaping the child.
    unsafe {
        libc::write(go[1], c"x".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        for fd in ready.into_iter().chain(go) {
            libc::close(fd);
        }
    }
    for (fstype, r) in results {
        assert!(r.is_ok(), "idmapping a {fstype} mount: {r:?}");
    }
}
