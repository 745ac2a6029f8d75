// SPDX-License-Identifier: GPL-2.0

#include <drm/drm_gem.h>
#include <drm/drm_print.h>
#include <drm/drm_vma_manager.h>
#include <linux/mm.h>

void rust_helper_drm_gem_object_get(struct drm_gem_object *obj)
{
	drm_gem_object_get(obj);
}

void rust_helper_drm_gem_object_put(struct drm_gem_object *obj)
{
	drm_gem_object_put(obj);
}

unsigned long rust_helper_drm_vma_node_start(const struct drm_vma_offset_node *node)
{
	return drm_vma_node_start(node);
}

__u64 rust_helper_drm_vma_node_offset_addr(struct drm_vma_offset_node *node)
{
	return drm_vma_node_offset_addr(node);
}

void rust_helper_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vm_flags_set(vma, flags);
}

bool rust_helper_kref_get_unless_zero(struct kref *kref)
{
	return kref_get_unless_zero(kref);
}

struct drm_printer rust_helper_drm_seq_file_printer(struct seq_file *f)
{
	return drm_seq_file_printer(f);
}

bool rust_helper_drm_gem_object_is_shared_for_memory_stats(struct drm_gem_object *obj)
{
	return drm_gem_object_is_shared_for_memory_stats(obj);
}
