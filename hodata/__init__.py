"""hodata: normalized hand/object segmentation shards from public datasets (schema ``hodata/1``)."""

__version__ = "0.2.0"
