// SPDX-License-Identifier: GPL-2.0
/*
 * Raises a WARN on load: a splat must fail `make test` even when every test
 * passes. Used only by the runner self-test (FAULT=warn).
 */
#include <linux/bug.h>
#include <linux/module.h>

static int __init runner_fault_warn_init(void)
{
	WARN(1, "runner self-test: deliberate warning (FAULT=warn)\n");
	return 0;
}
module_init(runner_fault_warn_init);

static void __exit runner_fault_warn_exit(void)
{
}
module_exit(runner_fault_warn_exit);

MODULE_DESCRIPTION("Deliberate WARN for the runner self-test");
MODULE_LICENSE("GPL");
