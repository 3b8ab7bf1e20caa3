"""The dataset registry: each dataset file registers one reader here."""

from workers.datasets.base import DatasetReader
from workers.registry import Registry

DATASETS: Registry[DatasetReader] = Registry("dataset")
