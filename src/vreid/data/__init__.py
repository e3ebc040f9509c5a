"""Dataset readers and writers: AIC20/AIC21 CityFlow-ReID (real and simulation), VeRi-776,
VehicleID, VERI-Wild and a generic folder layout, all producing :class:`ImageRecord` lists."""

from vreid.data.aic import read_aic, write_aic
from vreid.data.loader import FORMATS, detect_format, load_dataset, load_from_config
from vreid.data.records import SPLITS, ImageRecord, ReidDataset

__all__ = [
    "FORMATS",
    "SPLITS",
    "ImageRecord",
    "ReidDataset",
    "detect_format",
    "load_dataset",
    "load_from_config",
    "read_aic",
    "write_aic",
]
