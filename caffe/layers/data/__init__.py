"""Data layers: they have no bottoms, produce the net's inputs and do no backward.

Data, ImageData and WindowData load batches in a background thread (caffe.data.prefetch, queue
length data_param.prefetch, as Caffe) and pass every image through the DataTransformer; HDF5Data,
MemoryData and DummyData fill their tops in forward; HDF5Output writes its bottoms to a file.
Errors in the data (a missing file, a bad record) raise caffe.data.DataError naming the layer and
the record or file.
"""
from .db import DataLayer
from .image import ImageDataLayer
from .hdf5 import HDF5DataLayer, HDF5OutputLayer
from .memory import DummyDataLayer, MemoryDataLayer
from .window import WindowDataLayer

__all__ = ["DataLayer", "ImageDataLayer", "HDF5DataLayer", "HDF5OutputLayer", "MemoryDataLayer",
           "DummyDataLayer", "WindowDataLayer"]
