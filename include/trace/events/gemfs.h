/* SPDX-License-Identifier: GPL-2.0 */
/*
 * gemfs tracepoints: an owner releasing a held folio for migration, and
 * the migration of held folios. See Documentation/filesystems/gemfs.rst.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM gemfs

#if !defined(_TRACE_GEMFS_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TRACE_GEMFS_H

#include <linux/migrate_mode.h>
#include <linux/tracepoint.h>

#define show_gemfs_migrate_mode(m)				\
	__print_symbolic(m,					\
		{ MIGRATE_ASYNC,	"async" },		\
		{ MIGRATE_SYNC_LIGHT,	"sync_light" },		\
		{ MIGRATE_SYNC,		"sync" })

/*
 * gemfs_release - the owner of a held folio was asked to release it
 * @ino: inode number of the object's file
 * @index: page index of the folio in the file
 * @nr: pages in the folio
 * @pfn: the folio's first page frame
 * @mode: the migrate mode
 * @ret: what the owner answered (0 or a negative errno)
 * @ns: how long the owner took
 */
TRACE_EVENT(gemfs_release,

	TP_PROTO(unsigned long ino, unsigned long index, unsigned int nr,
		 unsigned long pfn, int mode, int ret, u64 ns),

	TP_ARGS(ino, index, nr, pfn, mode, ret, ns),

	TP_STRUCT__entry(
		__field(unsigned long,	ino)
		__field(unsigned long,	index)
		__field(unsigned int,	nr)
		__field(unsigned long,	pfn)
		__field(int,		mode)
		__field(int,		ret)
		__field(u64,		ns)
	),

	TP_fast_assign(
		__entry->ino = ino;
		__entry->index = index;
		__entry->nr = nr;
		__entry->pfn = pfn;
		__entry->mode = mode;
		__entry->ret = ret;
		__entry->ns = ns;
	),

	TP_printk("ino=%lu index=%lu nr=%u pfn=0x%lx mode=%s ret=%d ns=%llu",
		  __entry->ino, __entry->index, __entry->nr, __entry->pfn,
		  show_gemfs_migrate_mode(__entry->mode), __entry->ret,
		  __entry->ns)
);

/*
 * gemfs_migrate - a gemfs folio went through ->migrate_folio
 * @ino, @index, @nr: as for gemfs_release
 * @src_pfn: the folio's frame before
 * @dst_pfn: the frame it was copied to (unchanged data unless @ret is 0)
 * @held: whether an owner held it (and was asked to release it)
 * @ret: 0 if the folio moved, else the error migration gets
 */
TRACE_EVENT(gemfs_migrate,

	TP_PROTO(unsigned long ino, unsigned long index, unsigned int nr,
		 unsigned long src_pfn, unsigned long dst_pfn, bool held,
		 int ret),

	TP_ARGS(ino, index, nr, src_pfn, dst_pfn, held, ret),

	TP_STRUCT__entry(
		__field(unsigned long,	ino)
		__field(unsigned long,	index)
		__field(unsigned int,	nr)
		__field(unsigned long,	src_pfn)
		__field(unsigned long,	dst_pfn)
		__field(bool,		held)
		__field(int,		ret)
	),

	TP_fast_assign(
		__entry->ino = ino;
		__entry->index = index;
		__entry->nr = nr;
		__entry->src_pfn = src_pfn;
		__entry->dst_pfn = dst_pfn;
		__entry->held = held;
		__entry->ret = ret;
	),

	TP_printk("ino=%lu index=%lu nr=%u src_pfn=0x%lx dst_pfn=0x%lx held=%d ret=%d",
		  __entry->ino, __entry->index, __entry->nr, __entry->src_pfn,
		  __entry->dst_pfn, __entry->held, __entry->ret)
);

#endif /* _TRACE_GEMFS_H */

/* This part must be outside protection */
#include <trace/define_trace.h>
