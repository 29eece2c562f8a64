"""Caffe's protobuf schema (caffe.proto) and its generated module."""

from . import caffe_pb2

__all__ = ["caffe_pb2"]
