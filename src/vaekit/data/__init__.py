"""Data: the dataset registry and its readers (images, tables, text), downloads, and the
preparation of raw values for a likelihood (binarization, dequantization).

``load_dataset(spec)`` is the entry point; ``DATASETS`` lists every dataset kind.
"""

from .dataset import DataFormatError, DataNotFoundError, Dataset
from .prep import AUGMENT, BINARIZE, DataPrep
from .registry import DATASETS, DatasetLoader, load_dataset, parse_spec, resolve_data_root

__all__ = [
    "AUGMENT",
    "BINARIZE",
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "DataPrep",
    "Dataset",
    "DatasetLoader",
    "load_dataset",
    "parse_spec",
    "resolve_data_root",
]
