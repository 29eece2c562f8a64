"""Common layers: structural layers that move, split, join and reshape blobs."""
import torch

from ..layer import Layer, register_layer


@register_layer
class InputLayer(Layer):
    """Net input: tops shaped by input_param.shape, values set from outside."""

    type = "Input"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            self.fail(f"input_param must give 0, 1 or {len(top)} shapes, got {len(shapes)}")
        for i, blob in enumerate(top):
            if len(shapes):
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        """Inputs keep the shape they were given."""

    def forward(self, bottom, top):
        """Inputs are filled from outside."""


@register_layer
class SplitLayer(Layer):
    """top_i = bottom for every i; backward sums the top diffs."""

    type = "Split"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        for blob in top:
            # Caffe shares storage; a split top may not be written in place by a consumer.
            blob.reshape_like(bottom[0])

    def forward(self, bottom, top):
        for blob in top:
            blob.data.copy_(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        torch.add(top[0].diff, top[1].diff, out=diff) if len(top) > 1 else diff.copy_(top[0].diff)
        for blob in top[2:]:
            diff.add_(blob.diff)
