"""Datasets, safe decoding, preprocessing and phone-photo augmentation."""

from .datasets import DatasetError, EvalDataset, ImageSet, Sample, load_dataset, load_datasets
from .decode import ImageDecodeError, ImageTooLargeError, load_image
from .transforms import letterbox

__all__ = [
    "DatasetError",
    "EvalDataset",
    "ImageDecodeError",
    "ImageSet",
    "ImageTooLargeError",
    "Sample",
    "letterbox",
    "load_dataset",
    "load_datasets",
    "load_image",
]
