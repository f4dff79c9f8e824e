"""segbench engine: train, evaluate, profile and store Cityscapes segmentation models."""
__version__ = "0.1.0"
