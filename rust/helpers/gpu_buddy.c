// SPDX-License-Identifier: GPL-2.0

#include <linux/gpu_buddy.h>

u64 rust_helper_gpu_buddy_block_offset(const struct gpu_buddy_block *block)
{
	return gpu_buddy_block_offset(block);
}

unsigned int rust_helper_gpu_buddy_block_order(struct gpu_buddy_block *block)
{
	return gpu_buddy_block_order(block);
}

bool rust_helper_gpu_buddy_block_is_clear(struct gpu_buddy_block *block)
{
	return gpu_buddy_block_is_clear(block);
}
