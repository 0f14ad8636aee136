"""qclassify: MobileNetV2 with a quantum feature layer for imbalanced image classification."""
