// SPDX-License-Identifier: GPL-2.0
/*
 * A KUnit suite with one failing case: loading it must fail `make test`.
 * Used only by the runner self-test (FAULT=kunit).
 */
#include <kunit/test.h>
#include <linux/module.h>

static void runner_fault_passes(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, 1 + 1, 2);
}

static void runner_fault_fails(struct kunit *test)
{
	KUNIT_EXPECT_EQ_MSG(test, 1 + 1, 3, "deliberate failure (FAULT=kunit)");
}

static struct kunit_case runner_fault_cases[] = {
	KUNIT_CASE(runner_fault_passes),
	KUNIT_CASE(runner_fault_fails),
	{}
};

static struct kunit_suite runner_fault_suite = {
	.name = "runner_fault",
	.test_cases = runner_fault_cases,
};

kunit_test_suite(runner_fault_suite);

MODULE_DESCRIPTION("Deliberately failing KUnit suite for the runner self-test");
MODULE_LICENSE("GPL");
