"""Datasets with Cityscapes' 19 classes in their official layouts, behind one entry point
(`engine.data.datasets`: open_dataset, conditions, default_root, ensure_layout)."""
from engine.data.datasets import (ACDC_CONDITIONS, DATASETS, LABEL_FORMATS, DatasetError, conditions,  # noqa: F401
                                  default_root, ensure_layout, open_dataset)
