"""examples/matlab/classification_demo.m on a tiny generated net: matcaffe's demo flow (ten
crops, mirrored, minus the mean) and scores equal to pycaffe's on the same batch."""
import numpy as np

import caffe

from .octave import ROOT, ok, run_octave

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 10 dim: 3 dim: 27 dim: 27 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 5 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_classification_demo(matcaffe, tmp_path):
    from PIL import Image
    model = tmp_path / "deploy.prototxt"
    model.write_text(TINY)
    caffe.set_random_seed(5)
    net = caffe.Net(str(model), caffe.TEST)
    net.save(str(tmp_path / "tiny.caffemodel"))
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    mean = (rng.random((3, 32, 32)) * 100).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(
        caffe.io.array_to_blobproto(mean[None]).SerializeToString())
    out = ok(run_octave(matcaffe, f"""
    addpath('{ROOT / "examples" / "matlab"}');
    [scores, maxlabel, crops] = classification_demo(imread('im.png'), false, ...
        'deploy.prototxt', 'tiny.caffemodel', 'mean.binaryproto');
    printf('scores %s label %d crops %s\\n', mat2str(size(scores)), maxlabel, mat2str(size(crops)));
    mean_data = caffe.io.read_mean('mean.binaryproto');
    save('-v7', 'mean.mat', 'mean_data');            % BVLC's demo reads its mean from a .mat
    same = classification_demo(imread('im.png'), false, 'deploy.prototxt', 'tiny.caffemodel', ...
                               'mean.mat');
    printf('same from .mat %d\\n', isequal(same, scores));
    printf('mirrored %d %d\\n', isequal(crops(end:-1:1, :, :, 1), crops(:, :, :, 6)), ...
           isequal(crops(end:-1:1, :, :, 5), crops(:, :, :, 10)));
    fid = fopen('crops.out', 'w'); fwrite(fid, crops, 'single'); fclose(fid);
    fid = fopen('scores.out', 'w'); fwrite(fid, scores, 'single'); fclose(fid);
    """, tmp_path, OMP_NUM_THREADS="1"))
    assert "scores [5 1]" in out and "crops [27 27 3 10]" in out
    assert "mirrored 1 1" in out and "same from .mat 1" in out
    crops = np.fromfile(tmp_path / "crops.out", np.float32).reshape(10, 3, 27, 27)
    scores = np.fromfile(tmp_path / "scores.out", np.float32)
    # The corner crop starts at the resized image's corner: it holds BGR values minus the mean.
    assert abs(float(crops[0].mean())) < 200 and crops.std() > 1
    net.blobs["data"].data[...] = crops
    expected = net.forward()["prob"].mean(axis=0)
    assert np.allclose(scores, expected, rtol=0, atol=1e-6)
    assert abs(scores.sum() - 1) < 1e-5
    label = int(out.split("label ")[1].split()[0])
    assert label == int(np.argmax(expected)) + 1
