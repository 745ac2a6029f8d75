// SPDX-License-Identifier: GPL-2.0

#include <drm/ttm/ttm_device.h>
#include <drm/ttm/ttm_resource.h>

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
