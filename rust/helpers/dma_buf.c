// SPDX-License-Identifier: GPL-2.0

#include <linux/dma-buf.h>
#include <linux/scatterlist.h>

void rust_helper_get_dma_buf(struct dma_buf *dmabuf)
{
	get_dma_buf(dmabuf);
}

struct page *rust_helper_sg_page(struct scatterlist *sg)
{
	return sg_page(sg);
}

dma_addr_t rust_helper_sg_dma_address(struct scatterlist *sg)
{
	return sg_dma_address(sg);
}

unsigned int rust_helper_sg_dma_len(struct scatterlist *sg)
{
	return sg_dma_len(sg);
}
