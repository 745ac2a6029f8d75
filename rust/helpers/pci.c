// SPDX-License-Identifier: GPL-2.0

#include <linux/device.h>
#include <linux/pci.h>

void rust_helper_pci_set_drvdata(struct pci_dev *pdev, void *data)
{
	pci_set_drvdata(pdev, data);
}

void *rust_helper_pci_get_drvdata(struct pci_dev *pdev)
{
	return pci_get_drvdata(pdev);
}

int rust_helper_devm_add_action_or_reset(struct device *dev,
					 void (*action)(void *), void *data)
{
	return devm_add_action_or_reset(dev, action, data);
}
