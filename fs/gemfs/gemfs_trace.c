// SPDX-License-Identifier: GPL-2.0
/*
 * gemfs's tracepoints (include/trace/events/gemfs.h), defined here and
 * emitted from gemfs_main.rs through the two functions below: this kernel's
 * Rust has no tracepoint support of its own. Each returns at once when its
 * event is disabled; migration of a held folio, the only caller, costs far
 * more than the call.
 */
#include <linux/fs.h>
#include <linux/mm.h>

#define CREATE_TRACE_POINTS
#include <trace/events/gemfs.h>

#include "gemfs_trace.h"

void gemfs_trace_release(struct folio *folio, int mode, int ret, u64 ns)
{
	if (trace_gemfs_release_enabled())
		trace_gemfs_release(folio->mapping->host->i_ino, folio->index,
				    folio_nr_pages(folio), folio_pfn(folio),
				    mode, ret, ns);
}

void gemfs_trace_migrate(struct folio *src, struct folio *dst, bool held,
			 int ret)
{
	if (trace_gemfs_migrate_enabled())
		trace_gemfs_migrate(src->mapping->host->i_ino, src->index,
				    folio_nr_pages(src), folio_pfn(src),
				    folio_pfn(dst), held, ret);
}
