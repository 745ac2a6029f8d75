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
