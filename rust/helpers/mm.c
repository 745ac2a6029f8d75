// SPDX-License-Identifier: GPL-2.0

#include <linux/gfp.h>
#include <linux/hugetlb_inline.h>
#include <linux/ioport.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>

void rust_helper_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void rust_helper_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

void rust_helper_mmget(struct mm_struct *mm)
{
	mmget(mm);
}

bool rust_helper_mmget_not_zero(struct mm_struct *mm)
{
	return mmget_not_zero(mm);
}

void rust_helper_mmap_read_lock(struct mm_struct *mm)
{
	mmap_read_lock(mm);
}

bool rust_helper_mmap_read_trylock(struct mm_struct *mm)
{
	return mmap_read_trylock(mm);
}

void rust_helper_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

struct vm_area_struct *rust_helper_vma_lookup(struct mm_struct *mm,
					      unsigned long addr)
{
	return vma_lookup(mm, addr);
}

bool rust_helper_vma_is_anonymous(struct vm_area_struct *vma)
{
	return vma_is_anonymous(vma);
}

bool rust_helper_is_vm_hugetlb_page(struct vm_area_struct *vma)
{
	return is_vm_hugetlb_page(vma);
}

struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

#ifdef CONFIG_MMU_NOTIFIER
void rust_helper_mmu_interval_set_seq(struct mmu_interval_notifier *interval_sub,
				      unsigned long cur_seq)
{
	mmu_interval_set_seq(interval_sub, cur_seq);
}

bool rust_helper_mmu_interval_read_retry(struct mmu_interval_notifier *interval_sub,
					 unsigned long seq)
{
	return mmu_interval_read_retry(interval_sub, seq);
}

bool rust_helper_mmu_interval_check_retry(struct mmu_interval_notifier *interval_sub,
					  unsigned long seq)
{
	return mmu_interval_check_retry(interval_sub, seq);
}

bool rust_helper_mmu_notifier_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}
#endif

unsigned long rust_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

int rust_helper_numa_node_id(void)
{
	return numa_node_id();
}

#ifdef CONFIG_DEVICE_PRIVATE
struct dev_pagemap *rust_helper_page_pgmap(struct page *page)
{
	return page->pgmap;
}

void rust_helper_release_mem_region(resource_size_t start, resource_size_t n)
{
	release_mem_region(start, n);
}

/*
 * A movable order-0 folio for the destination of a migration out of device
 * private memory: by @vma's memory policy at @addr, or on the local node
 * without a mapping (eviction), as lib/test_hmm.c allocates them.
 */
struct folio *rust_helper_alloc_movable_folio(struct vm_area_struct *vma,
					      unsigned long addr)
{
	if (vma)
		return vma_alloc_folio(GFP_HIGHUSER_MOVABLE, 0, vma, addr, false);
	return folio_alloc(GFP_HIGHUSER_MOVABLE, 0);
}
#endif
