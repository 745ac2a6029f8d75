// SPDX-License-Identifier: GPL-2.0

//! DMA buffers shared between drivers (dma-buf), as an importer sees them.
//!
//! An exporter gives a buffer to userspace as a dma-buf file; an importer
//! attaches its device to it ([`Attachment`]) and maps the attachment, which
//! yields a scatter-gather table ([`SgTable`]) of the buffer's memory for
//! that device. The table's CPU side lists the buffer's pages (when the
//! memory has struct pages at all), its DMA side the addresses the device
//! uses. A device that reaches memory through the CPU, as a software one
//! does, needs the pages: [`SgTable::pfns`] gives them, or refuses a table
//! without them.
//!
//! The shape follows upstream's later Rust DRM and scatterlist work: the
//! types are transparent wrappers of the C structures, borrowed from
//! pointers the C code owns ([`Attachment::from_raw`],
//! [`SgTable::from_raw`]), except [`DmaBuf`], which is reference counted,
//! and [`OwnedSgTable`], a table built from pages the caller owns.
//!
//! C headers: [`include/linux/dma-buf.h`](srctree/include/linux/dma-buf.h),
//! [`include/linux/scatterlist.h`](srctree/include/linux/scatterlist.h).

use crate::{
    bindings,
    error::{from_err_ptr, to_result, Result},
    page::{Page, PAGE_SIZE},
    prelude::*,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::{marker::PhantomData, ptr::NonNull};

/// A dma-buf.
///
/// # Invariants
///
/// The buffer is alive while a reference to it is held: references are
/// counted on its file with `get_dma_buf()`/`dma_buf_put()`.
///
/// # Examples
///
/// ```
/// use kernel::dma_buf::DmaBuf;
///
/// // No such file descriptor.
/// assert_eq!(DmaBuf::from_fd(-1).err(), Some(EBADF));
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
pub struct DmaBuf(Opaque<bindings::dma_buf>);

// SAFETY: dma-bufs are reference counted through their file and may be
// used and released from any thread.
unsafe impl Send for DmaBuf {}
// SAFETY: the fields read through `&DmaBuf` never change after export.
unsafe impl Sync for DmaBuf {}

// SAFETY: `get_dma_buf()`/`dma_buf_put()` keep the buffer alive.
unsafe impl AlwaysRefCounted for DmaBuf {
    fn inc_ref(&self) {
        // SAFETY: the buffer is alive while `self` is (type invariant).
        unsafe { bindings::get_dma_buf(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it owns.
        unsafe { bindings::dma_buf_put(obj.cast().as_ptr()) };
    }
}

impl DmaBuf {
    /// Takes a reference to the dma-buf of file descriptor `fd` of the
    /// current process: `EBADF` if there is no such descriptor, `EINVAL`
    /// if its file is not a dma-buf.
    pub fn from_fd(fd: i32) -> Result<ARef<Self>> {
        // SAFETY: `dma_buf_get()` accepts any descriptor number; a buffer
        // it returns comes with a reference, which becomes ours.
        let raw = from_err_ptr(unsafe { bindings::dma_buf_get(fd) })?;
        // SAFETY: not null (not an error pointer); the reference is ours.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(raw.cast())) })
    }

    /// Borrows a buffer from a raw pointer.
    ///
    /// # Safety
    ///
    /// `raw` must be a live dma-buf for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(raw: *const bindings::dma_buf) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    /// The raw buffer.
    pub fn as_raw(&self) -> *mut bindings::dma_buf {
        self.0.get()
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        // SAFETY: `size` is set by the exporter and never changes.
        unsafe { (*self.as_raw()).size }
    }
}

/// An attachment of a device to a dma-buf (`struct dma_buf_attachment`).
///
/// Only borrowed: attachments are made and undone by their owner (for a
/// GEM object, the DRM core's PRIME import and `drm_prime_gem_destroy()`).
///
/// # Invariants
///
/// The attachment is live, and keeps its dma-buf live, for as long as the
/// reference this is borrowed as.
#[repr(transparent)]
pub struct Attachment(Opaque<bindings::dma_buf_attachment>);

impl Attachment {
    /// Borrows an attachment from a raw pointer.
    ///
    /// # Safety
    ///
    /// `raw` must be a live attachment, not detached during `'a`.
    pub unsafe fn from_raw<'a>(raw: *const bindings::dma_buf_attachment) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    /// The raw attachment.
    pub fn as_raw(&self) -> *mut bindings::dma_buf_attachment {
        self.0.get()
    }

    /// The buffer it attaches to.
    pub fn dma_buf(&self) -> &DmaBuf {
        // SAFETY: `dmabuf` is set at attach and, with its reference taken
        // by the attacher, live until detach, after `self` (invariant).
        unsafe { DmaBuf::from_raw((*self.as_raw()).dmabuf) }
    }

    /// Whether the importer handles moves itself (`move_notify`); if not,
    /// the core pins the buffer for as long as it is attached.
    pub fn is_dynamic(&self) -> bool {
        // SAFETY: `importer_ops` is set at attach and never changes.
        !unsafe { (*self.as_raw()).importer_ops }.is_null()
    }
}

/// A scatter-gather table (`struct sg_table`).
///
/// Walked through its CPU side ([`SgTable::iter`], the `orig_nents` entries
/// the table was built with): each entry is a run of physically contiguous
/// memory, with its page if the memory has one.
///
/// # Invariants
///
/// The table and its entries are live and not changed for as long as the
/// reference this is borrowed as.
#[repr(transparent)]
pub struct SgTable(Opaque<bindings::sg_table>);

impl SgTable {
    /// Borrows a table from a raw pointer.
    ///
    /// # Safety
    ///
    /// `raw` must be a live table, neither freed nor changed during `'a`
    /// (for a dma-buf mapping: not unmapped).
    pub unsafe fn from_raw<'a>(raw: *const bindings::sg_table) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    /// The raw table.
    pub fn as_raw(&self) -> *mut bindings::sg_table {
        self.0.get()
    }

    /// The entries, CPU side (as `for_each_sgtable_sg()`).
    pub fn iter(&self) -> SgIter<'_> {
        // SAFETY: the table is live (type invariant); `sgl` and
        // `orig_nents` are set when it is built.
        let (sg, left) = unsafe { ((*self.as_raw()).sgl, (*self.as_raw()).orig_nents) };
        SgIter {
            sg,
            left,
            _p: PhantomData,
        }
    }

    /// The page frame number of every `PAGE_SIZE` page of the memory the
    /// table describes, in order, for at most `size` bytes.
    ///
    /// Fails with `EOPNOTSUPP` if an entry has no struct page (memory the
    /// CPU cannot reach through one, such as device memory of a peer) or
    /// does not start and end on page boundaries, with `EINVAL` if the
    /// table describes less than `size` bytes, and with `ENOMEM`.
    pub fn pfns(&self, size: usize) -> Result<KVec<usize>> {
        let n = size / PAGE_SIZE;
        let mut pfns = KVec::with_capacity(n, GFP_KERNEL)?;
        for sg in self.iter() {
            let (off, len) = (sg.offset() as usize, sg.length() as usize);
            let pfn = sg.pfn().ok_or(EOPNOTSUPP)?;
            if off % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
                return Err(EOPNOTSUPP);
            }
            for i in 0..len / PAGE_SIZE {
                if pfns.len() == n {
                    return Ok(pfns);
                }
                pfns.push(pfn + off / PAGE_SIZE + i, GFP_KERNEL)?;
            }
        }
        if pfns.len() < n {
            return Err(EINVAL);
        }
        Ok(pfns)
    }
}

/// An iterator over the CPU side of an [`SgTable`].
pub struct SgIter<'a> {
    sg: *mut bindings::scatterlist,
    left: u32,
    _p: PhantomData<&'a SgTable>,
}

impl<'a> Iterator for SgIter<'a> {
    type Item = &'a SgEntry;

    fn next(&mut self) -> Option<&'a SgEntry> {
        if self.left == 0 || self.sg.is_null() {
            return None;
        }
        // SAFETY: `sg` is one of the table's first `orig_nents` entries,
        // live for `'a` (the table's invariant).
        let cur = unsafe { &*self.sg.cast::<SgEntry>() };
        self.left -= 1;
        // SAFETY: as above; `sg_next()` follows chain links and returns
        // null after the last entry.
        self.sg = unsafe { bindings::sg_next(self.sg) };
        Some(cur)
    }
}

/// One entry of a scatter-gather table (`struct scatterlist`).
#[repr(transparent)]
pub struct SgEntry(Opaque<bindings::scatterlist>);

impl SgEntry {
    fn as_raw(&self) -> *mut bindings::scatterlist {
        self.0.get()
    }

    /// The page frame number of the entry's first page, if it has one.
    pub fn pfn(&self) -> Option<usize> {
        // SAFETY: the entry is live while borrowed (its table's invariant).
        let page = unsafe { bindings::sg_page(self.as_raw()) };
        // SAFETY: a page that a table lists is a valid struct page.
        (!page.is_null()).then(|| unsafe { bindings::page_to_pfn(page) } as usize)
    }

    /// The offset of the memory in its first page.
    pub fn offset(&self) -> u32 {
        // SAFETY: as for `pfn`.
        unsafe { (*self.as_raw()).offset }
    }

    /// The length of the memory, in bytes.
    pub fn length(&self) -> u32 {
        // SAFETY: as for `pfn`.
        unsafe { (*self.as_raw()).length }
    }

    /// The DMA address of the entry, once the table is DMA-mapped (only
    /// meaningful for the first `nents` entries).
    pub fn dma_address(&self) -> u64 {
        // SAFETY: as for `pfn`.
        unsafe { bindings::sg_dma_address(self.as_raw()) }
    }
}

/// A scatter-gather table of pages the caller keeps, freed on drop.
///
/// # Invariants
///
/// `table` was built by `sg_alloc_table_from_pages_segment()` and is freed
/// only on drop; the pages it lists outlive it (borrowed for `'a`).
///
/// # Examples
///
/// ```
/// use kernel::{dma_buf::OwnedSgTable, page::{Page, PAGE_SIZE}};
///
/// let pages = [
///     Page::alloc_page(GFP_KERNEL)?,
///     Page::alloc_page(GFP_KERNEL)?,
///     Page::alloc_page(GFP_KERNEL)?,
/// ];
/// let sgt = OwnedSgTable::from_pages(&pages)?;
/// let mut want = KVec::new();
/// for p in &pages {
///     // SAFETY: the page is ours and alive.
///     let pfn = unsafe { kernel::bindings::page_to_pfn(p.as_ptr()) };
///     want.push(pfn as usize, GFP_KERNEL)?;
/// }
/// // Page by page, whatever the entries (contiguous pages share one).
/// assert_eq!(sgt.pfns(3 * PAGE_SIZE)?.as_slice(), want.as_slice());
/// assert_eq!(sgt.pfns(2 * PAGE_SIZE)?.as_slice(), &want[..2]);
/// let bytes: u32 = sgt.iter().map(|sg| sg.length()).sum();
/// assert_eq!(bytes as usize, 3 * PAGE_SIZE);
/// // More than the table describes.
/// assert_eq!(sgt.pfns(4 * PAGE_SIZE).err(), Some(EINVAL));
/// # Ok::<(), Error>(())
/// ```
pub struct OwnedSgTable<'a> {
    table: KBox<Opaque<bindings::sg_table>>,
    _pages: PhantomData<&'a [Page]>,
}

impl<'a> OwnedSgTable<'a> {
    /// Builds a table of `pages`, in order, merging contiguous ones.
    pub fn from_pages(pages: &'a [Page]) -> Result<Self> {
        let n = u32::try_from(pages.len()).map_err(|_| EINVAL)?;
        let mut raw = KVec::with_capacity(pages.len(), GFP_KERNEL)?;
        for p in pages {
            raw.push(p.as_ptr(), GFP_KERNEL)?;
        }
        // SAFETY: all-zero is an empty table, which the call fills.
        let table = KBox::new(Opaque::new(unsafe { core::mem::zeroed() }), GFP_KERNEL)?;
        // SAFETY: `raw` holds `n` live pages; the table is ours. The call
        // copies the page pointers into the entries.
        to_result(unsafe {
            bindings::sg_alloc_table_from_pages_segment(
                table.get(),
                raw.as_mut_ptr(),
                n,
                0,
                (n as usize * PAGE_SIZE) as _,
                u32::MAX,
                GFP_KERNEL.as_raw(),
            )
        })?;
        // INVARIANT: built above; `pages` are borrowed for `'a`.
        Ok(Self {
            table,
            _pages: PhantomData,
        })
    }
}

impl core::ops::Deref for OwnedSgTable<'_> {
    type Target = SgTable;

    fn deref(&self) -> &SgTable {
        // SAFETY: the table lives and stays unchanged until drop (type
        // invariant).
        unsafe { SgTable::from_raw(self.table.get()) }
    }
}

impl Drop for OwnedSgTable<'_> {
    fn drop(&mut self) {
        // SAFETY: built by `from_pages` and not freed before (invariant).
        unsafe { bindings::sg_free_table(self.table.get()) };
    }
}
