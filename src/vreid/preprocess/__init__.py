"""Pre-processing: crop each image to its vehicle with a torchvision detector (paper section 3.2.1),
and train such a detector on data with true boxes when no COCO weights are available."""

from vreid.preprocess.crop import CropReport, crop_dataset, crop_folder
from vreid.preprocess.detectors import (
    DETECTORS,
    LoadedDetector,
    build_detector,
    detector_names,
    load_detector,
)
from vreid.preprocess.select import select_boxes, selection_scores
from vreid.preprocess.train_detector import TrainDetectorResult, train_detector

__all__ = [
    "DETECTORS",
    "CropReport",
    "LoadedDetector",
    "TrainDetectorResult",
    "build_detector",
    "crop_dataset",
    "crop_folder",
    "detector_names",
    "load_detector",
    "select_boxes",
    "selection_scores",
    "train_detector",
]
