function [scores, maxlabel, crops] = classification_demo(im, use_gpu, net_model, net_weights, mean_file)
% [scores, maxlabel] = classification_demo(im, use_gpu, net_model, net_weights, mean_file)
%
% Classify an image with a Caffe net from MATLAB or Octave, as BVLC's matcaffe demo does:
% ten crops of the image (four corners and the centre, and their mirror images) minus the
% mean image go through the net in one batch, and the ten score vectors are averaged.
%
%   im          an H x W x 3 RGB image as imread gives it (default: cat.jpg beside the
%               models, if there is one)
%   use_gpu     true to run on GPU 0 (default false)
%   net_model   a deploy prototxt whose input is 10 x 3 x crop x crop
%               (default: models/bvlc_reference_caffenet/deploy.prototxt)
%   net_weights its .caffemodel (default: bvlc_reference_caffenet.caffemodel)
%   mean_file   the mean image, W x H x C BGR: a .binaryproto (default: data/ilsvrc12/
%               imagenet_mean.binaryproto) or a .mat holding mean_data, as BVLC's
%               ilsvrc_2012_mean.mat; its size is the size the image is resized to
%
%   scores      the class scores averaged over the ten crops (a column)
%   maxlabel    the best class, counted from 1
%   crops       the batch that went in (W x H x C x 10, BGR, mean subtracted)
%
% Before it runs, matcaffe must be on the path: `python -m caffe.matlab build` prints the
% folder to addpath, or start the host with `python -m caffe.matlab octave` (or matlab).
%
% Run from the caffe folder (with models/ and data/ there):
%   im = imread('examples/images/cat.jpg');
%   [scores, maxlabel] = classification_demo(im, false);

if nargin < 2 || isempty(use_gpu), use_gpu = false; end
if nargin < 3, net_model = 'models/bvlc_reference_caffenet/deploy.prototxt'; end
if nargin < 4
  net_weights = 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel';
end
if nargin < 5, mean_file = 'data/ilsvrc12/imagenet_mean.binaryproto'; end
if ~exist(net_weights, 'file')
  error('classification_demo:noWeights', ['%s is not there: fetch it first (caffe zoo ' ...
        'download bvlc_reference_caffenet), or pass your own net'], net_weights);
end

if use_gpu
  caffe.set_mode_gpu();
  caffe.set_device(0);
else
  caffe.set_mode_cpu();
end

% phase 'test': dropout off
net = caffe.Net(net_model, net_weights, 'test');

if nargin < 1 || isempty(im)
  im = imread('examples/images/cat.jpg');
end
crop = net.blobs(net.inputs{1}).shape();
tic;
crops = prepare_image(im, read_mean_image(mean_file), crop(1));
toc;
tic;
scores = net.forward({crops});
toc;
scores = mean(scores{1}, 2);       % one column per crop: average them
[~, maxlabel] = max(scores);

caffe.reset_all();
end

function mean_data = read_mean_image(mean_file)
[~, ~, ext] = fileparts(mean_file);
if strcmpi(ext, '.mat')
  d = load(mean_file);
  mean_data = single(d.mean_data);
else
  mean_data = caffe.io.read_mean(mean_file);
end
end

function crops = prepare_image(im, mean_data, crop_dim)
% the ten crops of matcaffe's demo, width first and BGR as Caffe wants them
image_dim = size(mean_data, 1);
im = single(im);
if size(im, 3) == 1
  im = repmat(im, [1 1 3]);
end
im = im(:, :, [3 2 1]);                   % RGB -> BGR
im = permute(im, [2 1 3]);                % H x W x C -> W x H x C
im = resize_bilinear(im, size(mean_data, 1), size(mean_data, 2));
im = im - mean_data;

crops = zeros(crop_dim, crop_dim, 3, 10, 'single');
corners = [0, image_dim - crop_dim] + 1;
n = 1;
for i = corners
  for j = corners
    crops(:, :, :, n) = im(i:i + crop_dim - 1, j:j + crop_dim - 1, :);
    crops(:, :, :, n + 5) = crops(end:-1:1, :, :, n);    % mirrored left to right
    n = n + 1;
  end
end
c = floor(corners(2) / 2) + 1;
crops(:, :, :, 5) = im(c:c + crop_dim - 1, c:c + crop_dim - 1, :);
crops(:, :, :, 10) = crops(end:-1:1, :, :, 5);
end

function out = resize_bilinear(im, rows, cols)
% imresize(im, [rows cols], 'bilinear') without the Image Processing Toolbox (Octave's
% image package is not always there): pixel centres mapped as imresize maps them
[h, w, c] = size(im);
y = ((1:rows) - 0.5) * h / rows + 0.5;
x = ((1:cols) - 0.5) * w / cols + 0.5;
y = min(max(y, 1), h);
x = min(max(x, 1), w);
[X, Y] = meshgrid(x, y);
out = zeros(rows, cols, c, 'single');
for k = 1:c
  out(:, :, k) = interp2(double(im(:, :, k)), X, Y, 'linear');
end
end
