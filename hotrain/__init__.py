"""hotrain: train, evaluate and run DeepLabv3 hand / hand+object segmentation on hodata/1 shards."""

__version__ = "0.2.0"
