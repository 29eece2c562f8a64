"""Data layers: they have no bottoms, produce the net's inputs and do no backward.

Data, ImageData and WindowData load batches in a background thread (caffe.data.prefetch, queue
length data_param.prefetch, as Caffe) and pass every image through the DataTransformer; HDF5Data,
MemoryData and DummyData fill their tops in forward; HDF5Output writes its bottoms to a file;
the segmentation forks' ImageSegData and DenseImageData read image + label-image lists;
SSD's AnnotatedData reads AnnotatedDatum records with their boxes.
Errors in the data (a missing file, a bad record) raise caffe.data.DataError naming the layer and
the record or file.
"""
from .db_data import DataLayer
from .image_data import ImageDataLayer
from .hdf5_data import HDF5DataLayer, HDF5OutputLayer
from .memory_data import DummyDataLayer, MemoryDataLayer
from .window_data import WindowDataLayer
from .seg_data import DenseImageDataLayer, ImageSegDataLayer
from .annotated_data import AnnotatedDataLayer

__all__ = ["DataLayer", "ImageDataLayer", "HDF5DataLayer", "HDF5OutputLayer", "MemoryDataLayer",
           "DummyDataLayer", "WindowDataLayer", "ImageSegDataLayer", "DenseImageDataLayer",
           "AnnotatedDataLayer"]
