// SPDX-License-Identifier: GPL-2.0

#include <linux/dma-fence.h>
#include <linux/dma-resv.h>

struct dma_fence *rust_helper_dma_fence_get(struct dma_fence *fence)
{
	return dma_fence_get(fence);
}

void rust_helper_dma_fence_put(struct dma_fence *fence)
{
	dma_fence_put(fence);
}

bool rust_helper_dma_fence_is_signaled(struct dma_fence *fence)
{
	return dma_fence_is_signaled(fence);
}

void rust_helper_dma_fence_set_error(struct dma_fence *fence, int error)
{
	dma_fence_set_error(fence, error);
}

int rust_helper_dma_resv_lock(struct dma_resv *obj, struct ww_acquire_ctx *ctx)
{
	return dma_resv_lock(obj, ctx);
}

void rust_helper_dma_resv_unlock(struct dma_resv *obj)
{
	dma_resv_unlock(obj);
}

/* Real functions with CONFIG_LOCKDEP, empty inlines without. */
bool rust_helper_dma_fence_begin_signalling(void)
{
	return dma_fence_begin_signalling();
}

void rust_helper_dma_fence_end_signalling(bool cookie)
{
	dma_fence_end_signalling(cookie);
}
