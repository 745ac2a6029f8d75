// SPDX-License-Identifier: GPL-2.0

#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/pagemap.h>

struct folio *rust_helper_folio_alloc(gfp_t gfp, unsigned int order)
{
	return folio_alloc(gfp, order);
}

void rust_helper_folio_get(struct folio *folio)
{
	folio_get(folio);
}

void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

int rust_helper_folio_ref_count(const struct folio *folio)
{
	return folio_ref_count(folio);
}

unsigned long rust_helper_folio_pfn(struct folio *folio)
{
	return folio_pfn(folio);
}

long rust_helper_folio_nr_pages(const struct folio *folio)
{
	return folio_nr_pages(folio);
}

unsigned int rust_helper_folio_order(const struct folio *folio)
{
	return folio_order(folio);
}

int rust_helper_folio_nid(const struct folio *folio)
{
	return folio_nid(folio);
}

bool rust_helper_folio_test_locked(const struct folio *folio)
{
	return folio_test_locked(folio);
}

void rust_helper_folio_lock(struct folio *folio)
{
	folio_lock(folio);
}

bool rust_helper_folio_trylock(struct folio *folio)
{
	return folio_trylock(folio);
}

bool rust_helper_folio_test_large(const struct folio *folio)
{
	return folio_test_large(folio);
}

void *rust_helper_kmap_local_folio(struct folio *folio, size_t offset)
{
	return kmap_local_folio(folio, offset);
}

pgoff_t rust_helper_folio_index(const struct folio *folio)
{
	return READ_ONCE(folio->index);
}

struct folio *rust_helper_folio_alloc_node(gfp_t gfp, unsigned int order,
					   int nid)
{
	return __folio_alloc_node(gfp, order, nid);
}

bool rust_helper_node_state_memory(int nid)
{
	return nid >= 0 && nid < MAX_NUMNODES && node_state(nid, N_MEMORY);
}

struct folio *rust_helper_pfn_folio(unsigned long pfn)
{
	return pfn_folio(pfn);
}

bool rust_helper_folio_test_anon(const struct folio *folio)
{
	return folio_test_anon(folio);
}

bool rust_helper_folio_test_hugetlb(const struct folio *folio)
{
	return folio_test_hugetlb(folio);
}

struct page *rust_helper_folio_page(struct folio *folio, unsigned long n)
{
	return folio_page(folio, n);
}
