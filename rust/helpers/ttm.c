// SPDX-License-Identifier: GPL-2.0

/* Out-of-line TTM calls: only where kernel::drm::ttm (and so TTM) is built. */
#ifdef CONFIG_RUST_DRM_TTM

#include <drm/ttm/ttm_bo.h>
#include <drm/ttm/ttm_device.h>
#include <drm/ttm/ttm_resource.h>
#include <drm/ttm/ttm_tt.h>

struct ttm_resource_manager *rust_helper_ttm_manager_type(struct ttm_device *bdev, int mem_type)
{
	return ttm_manager_type(bdev, mem_type);
}

void rust_helper_ttm_set_driver_manager(struct ttm_device *bdev, int type,
					struct ttm_resource_manager *manager)
{
	ttm_set_driver_manager(bdev, type, manager);
}

void rust_helper_ttm_resource_manager_set_used(struct ttm_resource_manager *man, bool used)
{
	ttm_resource_manager_set_used(man, used);
}

void rust_helper_ttm_resource_manager_cleanup(struct ttm_resource_manager *man)
{
	ttm_resource_manager_cleanup(man);
}

int rust_helper_ttm_bo_reserve(struct ttm_buffer_object *bo, bool interruptible, bool no_wait,
			       struct ww_acquire_ctx *ticket)
{
	return ttm_bo_reserve(bo, interruptible, no_wait, ticket);
}

void rust_helper_ttm_bo_unreserve(struct ttm_buffer_object *bo)
{
	ttm_bo_unreserve(bo);
}

void rust_helper_ttm_bo_move_null(struct ttm_buffer_object *bo, struct ttm_resource *new_mem)
{
	ttm_bo_move_null(bo, new_mem);
}

bool rust_helper_ttm_tt_is_populated(struct ttm_tt *tt)
{
	return ttm_tt_is_populated(tt);
}

#endif /* CONFIG_RUST_DRM_TTM */
