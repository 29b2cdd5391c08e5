"""Datasets without downloads, device-resident batches and augmentation.

Quick start::

    from jaxcnn.data import load_dataset, DeviceLoader
    splits = load_dataset("digits")                 # {'train', 'val', 'test'} ArrayDatasets
    loader = DeviceLoader(splits["train"], 128, shuffle=True, seed=0, augment=False)
    for epoch in range(3):
        for images, labels in loader:               # float32 (B, 28, 28, 1) NHWC, int32 (B,)
            ...

Datasets: :func:`dataset_names` (``digits`` needs no files; see :mod:`jaxcnn.data.registry`
for where the published MNIST/Fashion-MNIST/CIFAR files go). Images are always uint8 NHWC in
host memory until :class:`DeviceLoader` puts them on the device. ``tensorflow_datasets`` is
imported lazily (only by the TFDS backend, :mod:`jaxcnn.data.tfds_builders`).

Datasets larger than memory (image folders, TFDS ArrayRecord data): :class:`StreamingLoader`
(:mod:`jaxcnn.data.streaming`, on ``grain``; ``docs/data.md``), same iterator interface.
"""

from jaxcnn.data.arrays import ArrayDataset, DatasetError, channel_stats, split_dataset
from jaxcnn.data.arrays import stratified_split_indices
from jaxcnn.data.pipeline import DeviceLoader, augment, measure_throughput, normalize
from jaxcnn.data.registry import DEFAULT_VAL_SIZES, dataset_names, default_data_dir, load_dataset
from jaxcnn.data.streaming import StreamingLoader, StreamSplit, make_loader, open_image_folder_splits, open_tfds_split

__all__ = [
    "DEFAULT_VAL_SIZES",
    "ArrayDataset",
    "DatasetError",
    "DeviceLoader",
    "StreamSplit",
    "StreamingLoader",
    "augment",
    "channel_stats",
    "dataset_names",
    "default_data_dir",
    "load_dataset",
    "make_loader",
    "measure_throughput",
    "normalize",
    "open_image_folder_splits",
    "open_tfds_split",
    "split_dataset",
    "stratified_split_indices",
]
