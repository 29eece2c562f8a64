"""Looking inside a net: filters and activations as image grids, histograms, top-k plots.

    import caffe.vis
    grid = caffe.vis.filters_grid(net.params['conv1'][0].data)   # the notebooks' vis_square
    caffe.vis.save_png(grid, 'conv1.png')
    caffe.vis.save_png(caffe.vis.activations_grid(net.blobs['pool5'].data), 'pool5.png')
    caffe.vis.blob_histogram(net.blobs['fc7'].data, 'fc7_hist.png', nonzero=True)
    caffe.vis.top_k(net.blobs['prob'].data[0], caffe.vis.load_labels('synset_words.txt'))

`caffe vis -model m.prototxt -weights w.caffemodel -image cat.jpg -blobs conv1,pool5 -o out/`
writes these PNGs from the command line (caffe.tools.vis).
"""
from .notebook import display_param, net_html, net_svg
from .plots import blob_histogram, load_labels, plot_top_k, plot_vector, top_k
from .tile import NORMALIZE, activations_grid, filters_grid, save_png, to_image, vis_square

__all__ = ["vis_square", "filters_grid", "activations_grid", "to_image", "save_png",
           "blob_histogram", "plot_vector", "top_k", "plot_top_k", "load_labels", "net_html",
           "net_svg", "display_param", "NORMALIZE"]
