"""Dataset readers and writers: AIC20/AIC21 CityFlow-ReID (real and simulation), VeRi-776,
VehicleID and a generic folder layout, all producing :class:`ImageRecord` lists."""

from vreid.datasets.records import SPLITS, ImageRecord, ReidDataset

__all__ = ["SPLITS", "ImageRecord", "ReidDataset"]
