classdef Blob < handle
  % caffe.Blob: a blob of a net or a layer's parameter, width first (W x H x C x N), single.

  properties (Access = private)
    hBlob_self
  end

  methods
    function self = Blob(hBlob)
      if ~(isstruct(hBlob) && isfield(hBlob, 'ptr') && isfield(hBlob, 'init_key'))
        error('caffe:invalidHandle', 'caffe.Blob: not a Blob handle');
      end
      self.hBlob_self = hBlob;
    end

    function shape = shape(self)
      % the blob's shape, Caffe's axes reversed ([W H C N] for N x C x H x W)
      shape = caffe_('blob_get_shape', self.hBlob_self);
    end

    function reshape(self, shape)
      if ~(isempty(shape) || (isnumeric(shape) && isrow(shape)))
        error('caffe:invalidArgument', 'caffe.Blob.reshape: shape must be a row vector');
      end
      caffe_('blob_reshape', self.hBlob_self, double(shape));
    end

    function data = get_data(self)
      data = caffe_('blob_get_data', self.hBlob_self);
    end

    function set_data(self, data)
      caffe_('blob_set_data', self.hBlob_self, self.checked(data));
    end

    function diff = get_diff(self)
      diff = caffe_('blob_get_diff', self.hBlob_self);
    end

    function set_diff(self, diff)
      caffe_('blob_set_diff', self.hBlob_self, self.checked(diff));
    end
  end

  methods (Access = private)
    function data = checked(self, data)
      if ~(isnumeric(data) || islogical(data))
        error('caffe:invalidArgument', 'caffe.Blob: data or diff must be numeric');
      end
      % MATLAB drops trailing singleton dimensions (a 20 x 10 x 1 x 1 array is 20 x 10), and
      % a 0- or 1-axis blob still has a 2-D size: compare both padded with ones.
      want = self.shape();
      have = size(data);
      n = max([numel(want), numel(have), 2]);
      want = [want, ones(1, n - numel(want))];
      have = [have, ones(1, n - numel(have))];
      if ~isequal(want, have)
        error('caffe:sizeMismatch', ...
              'input data/diff size does not match target blob shape: [%s] vs [%s]', ...
              strtrim(sprintf('%d ', have)), strtrim(sprintf('%d ', want)));
      end
      if ~isa(data, 'single')
        data = single(data);
      end
    end
  end
end
