"""Caffe's command-line tools: caffe (train/test/time/device_query), data converters, log tools."""
