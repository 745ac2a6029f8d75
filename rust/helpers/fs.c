// SPDX-License-Identifier: GPL-2.0

#include <linux/fs.h>
#include <linux/pagemap.h>

struct file *rust_helper_get_file(struct file *f)
{
	return get_file(f);
}

loff_t rust_helper_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

gfp_t rust_helper_mapping_gfp_mask(struct address_space *mapping)
{
	return mapping_gfp_mask(mapping);
}

struct folio *rust_helper_filemap_get_folio(struct address_space *mapping,
					    pgoff_t index)
{
	return filemap_get_folio(mapping, index);
}

void rust_helper_mapping_set_gfp_mask(struct address_space *m, gfp_t mask)
{
	mapping_set_gfp_mask(m, mask);
}

void rust_helper_filemap_invalidate_lock_shared(struct address_space *mapping)
{
	filemap_invalidate_lock_shared(mapping);
}

void rust_helper_filemap_invalidate_unlock_shared(struct address_space *mapping)
{
	filemap_invalidate_unlock_shared(mapping);
}

bool rust_helper_folio_contain_hwpoisoned_page(struct folio *folio)
{
	return folio_contain_hwpoisoned_page(folio);
}

int rust_helper_folio_expected_ref_count(const struct folio *folio)
{
	return folio_expected_ref_count(folio);
}
