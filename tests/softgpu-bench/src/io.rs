//! CPU-side costs of gemfs, as ratios against tmpfs measured side by side:
//!
//! - `fault`: CPU page fault throughput on a mapping of a softgpu BO (a
//!   gemfs file) against a tmpfs file of the same size and huge page
//!   policy (`huge=within_size`, the policy of softgpu's private mount):
//!   first touch (allocation and fault), then refault of pages already in
//!   the page cache after `MADV_DONTNEED` zapped the page tables. Pinned
//!   BOs (plain shmem) are measured too.
//! - `fileio`: read(2) and write(2) throughput on a file of `mount -t
//!   gemfs` against `mount -t tmpfs` with the same options, in 1 MiB and
//!   4 KiB blocks.
//!
//! Each measurement alternates the targets (A B A B ...) so that drift in
//! the emulated machine's speed hits both alike; the ratio is of the summed
//! rates. Times are emulated (TCG).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use softgpu::{Device, Mapping, SOFTGPU_BO_PINNED};

use crate::frag::settle;
use crate::json::{Obj, Put as _};
use crate::sys::{create_file, Ctx as _, FileMap, Tmpfs, MIB, PAGE, R};
use crate::Config;

/// Alternations of the targets per measurement.
const ROUNDS: usize = 3;

/// Something mapped whose pages the `fault` phase touches.
trait Region {
    fn base(&self) -> *mut u8;
    fn size(&self) -> usize;
}

impl Region for FileMap {
    fn base(&self) -> *mut u8 {
        self.ptr
    }
    fn size(&self) -> usize {
        self.len
    }
}

impl Region for Mapping {
    fn base(&self) -> *mut u8 {
        self.addr() as *mut u8
    }
    fn size(&self) -> usize {
        self.len()
    }
}

/// Writes one byte per page; returns the elapsed time.
fn touch(r: &dyn Region, value: u8) -> Duration {
    let t = Instant::now();
    for off in (0..r.size()).step_by(PAGE) {
        // SAFETY: in bounds of a writable mapping.
        unsafe { r.base().add(off).write_volatile(value) };
    }
    t.elapsed()
}

/// Zaps the page table entries of `r` (the pages stay in the page cache).
fn zap(r: &dyn Region) -> R<()> {
    // SAFETY: advice on our own mapping.
    let ret = unsafe { libc::madvise(r.base().cast(), r.size(), libc::MADV_DONTNEED) };
    if ret != 0 {
        return Err(format!(
            "MADV_DONTNEED: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Pages per second (emulated), per target, summed over the rounds.
#[derive(Default, Clone, Copy)]
struct Rate {
    units: f64,
    secs: f64,
}

impl Rate {
    fn add(&mut self, units: usize, d: Duration) {
        self.units += units as f64;
        self.secs += d.as_secs_f64();
    }

    fn per_sec(self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.units / self.secs)
    }
}

fn ratio(a: Rate, b: Rate) -> Option<f64> {
    match (a.per_sec(), b.per_sec()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn record(phase: &str, f: impl FnOnce(&mut Obj) -> R<()>) -> Obj {
    let mut rec = Obj::new();
    rec.put("phase", phase);
    let res = f(&mut rec);
    crate::sys::finish(&mut rec, phase, res);
    rec
}

/// The `fault` phase: one record.
pub fn fault(cfg: &Config, workdir: &Path) -> Obj {
    record("fault", |rec| fault_inner(cfg, workdir, rec))
}

fn fault_inner(cfg: &Config, workdir: &Path, rec: &mut Obj) -> R<()> {
    settle()?;
    let size = (cfg.cost_mb * MIB) as usize;
    let pages = size / PAGE;
    rec.put("mb", cfg.cost_mb).put("rounds", ROUNDS);
    crate::progress(&format!(
        "fault: {} MiB, gemfs and pinned BOs against tmpfs",
        cfg.cost_mb
    ));
    let tmpfs = Tmpfs::mount(
        &workdir.join("fault-tmpfs"),
        &format!("huge=within_size,size={}m", 2 * cfg.cost_mb + 4),
    )?;
    let dev = Device::open().ctx("opening softgpu")?;
    let names = ["tmpfs", "gemfs", "pinned"];
    let (mut first, mut refault) = ([Rate::default(); 3], [Rate::default(); 3]);
    for round in 0..ROUNDS {
        for (i, name) in names.iter().enumerate() {
            // A fresh file or BO each round: first touch allocates.
            let (region, file, bo): (Box<dyn Region>, Option<File>, Option<u32>) = match i {
                0 => {
                    let path = tmpfs.dir.join(format!("f{round}"));
                    let f = create_file(&path)?;
                    f.set_len(size as u64).ctx("ftruncate")?;
                    let m = FileMap::new(&f, size)?;
                    (Box::new(m), Some(f), None)
                }
                _ => {
                    let flags = if i == 2 { SOFTGPU_BO_PINNED } else { 0 };
                    let h = dev.create_bo(size as u64, flags).ctx("GEM_CREATE")?;
                    let m = dev.mmap_bo(h, size).ctx("mmap of a BO")?;
                    (Box::new(m), None, Some(h))
                }
            };
            first[i].add(pages, touch(region.as_ref(), round as u8 + 1));
            zap(region.as_ref())?;
            refault[i].add(pages, touch(region.as_ref(), round as u8 + 2));
            // Check what the last touch wrote landed.
            // SAFETY: in bounds of a readable mapping.
            let v = unsafe { region.base().add(size - PAGE).read_volatile() };
            if v != round as u8 + 2 {
                return Err(format!("{name}: read back {v}, wrote {}", round as u8 + 2));
            }
            drop(region);
            if let Some(h) = bo {
                dev.close_bo(h).ctx("GEM_CLOSE")?;
            }
            if file.is_some() {
                std::fs::remove_file(tmpfs.dir.join(format!("f{round}"))).ctx("unlink")?;
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        rec.put(
            &format!("{name}_first_touch_pages_per_sec_emulated"),
            first[i].per_sec(),
        )
        .put(
            &format!("{name}_refault_pages_per_sec_emulated"),
            refault[i].per_sec(),
        );
    }
    rec.put("gemfs_vs_tmpfs_first_touch", ratio(first[1], first[0]))
        .put("gemfs_vs_tmpfs_refault", ratio(refault[1], refault[0]))
        .put("pinned_vs_tmpfs_first_touch", ratio(first[2], first[0]))
        .put("pinned_vs_tmpfs_refault", ratio(refault[2], refault[0]));
    Ok(())
}

/// The `fileio` phase: one record.
pub fn fileio(cfg: &Config, workdir: &Path) -> Obj {
    record("fileio", |rec| fileio_inner(cfg, workdir, rec))
}

fn fileio_inner(cfg: &Config, workdir: &Path, rec: &mut Obj) -> R<()> {
    settle()?;
    let size = cfg.cost_mb * MIB;
    let opts = format!("size={}m", 2 * cfg.cost_mb + 4);
    rec.put("mb", cfg.cost_mb)
        .put("rounds", ROUNDS)
        .put("mount_options", opts.as_str());
    crate::progress(&format!(
        "fileio: {} MiB files, gemfs against tmpfs",
        cfg.cost_mb
    ));
    let mounts = [
        Tmpfs::mount_type(&workdir.join("io-tmpfs"), "tmpfs", &opts)?,
        Tmpfs::mount_type(&workdir.join("io-gemfs"), "gemfs", &opts)?,
    ];
    let names = ["tmpfs", "gemfs"];
    for block in [MIB as usize, PAGE] {
        let (mut write, mut read) = ([Rate::default(); 2], [Rate::default(); 2]);
        let mut buf = vec![0u8; block];
        for round in 0..ROUNDS {
            for (i, m) in mounts.iter().enumerate() {
                let path = m.dir.join("data");
                let f = create_file(&path)?;
                buf.fill(round as u8 + 1);
                let t = Instant::now();
                for off in (0..size).step_by(block) {
                    f.write_all_at(&buf, off).ctx("write")?;
                }
                write[i].add(size as usize, t.elapsed());
                let t = Instant::now();
                for off in (0..size).step_by(block) {
                    f.read_exact_at(&mut buf, off).ctx("read")?;
                }
                read[i].add(size as usize, t.elapsed());
                if buf.iter().any(|&b| b != round as u8 + 1) {
                    return Err(format!("{}: read back the wrong data", names[i]));
                }
                drop(f);
                std::fs::remove_file(&path).ctx("unlink")?;
            }
        }
        let kb = block / 1024;
        for (i, name) in names.iter().enumerate() {
            let mbs = |r: Rate| r.per_sec().map(|b| b / MIB as f64);
            rec.put(
                &format!("{name}_write_{kb}k_mb_per_sec_emulated"),
                mbs(write[i]),
            )
            .put(
                &format!("{name}_read_{kb}k_mb_per_sec_emulated"),
                mbs(read[i]),
            );
        }
        rec.put(
            &format!("gemfs_vs_tmpfs_write_{kb}k"),
            ratio(write[1], write[0]),
        )
        .put(
            &format!("gemfs_vs_tmpfs_read_{kb}k"),
            ratio(read[1], read[0]),
        );
    }
    Ok(())
}
