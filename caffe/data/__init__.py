"""Caffe's data: key-value databases of Datum records, images, the transformer, prefetching."""
from ..errors import DataError
from .db import (array_to_datum, datum_to_array, image_to_datum, open_db,
                 parse_datum)
from .image import decode_image, read_image, read_image_list, resize_linear
from .prefetch import Prefetcher
from .transformer import DataTransformer, load_mean

__all__ = ["DataError", "DataTransformer", "Prefetcher", "array_to_datum", "datum_to_array",
           "decode_image", "image_to_datum", "load_mean", "open_db", "parse_datum",
           "read_image", "read_image_list", "resize_linear"]
