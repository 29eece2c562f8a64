classdef Layer < handle
  % caffe.Layer: a layer of a net; params is its learnable blobs (caffe.Blob array).

  properties (Access = private)
    hLayer_self
    attributes
  end
  properties (SetAccess = private)
    params
  end

  methods
    function self = Layer(hLayer)
      if ~(isstruct(hLayer) && isfield(hLayer, 'ptr') && isfield(hLayer, 'init_key'))
        error('caffe:invalidHandle', 'caffe.Layer: not a Layer handle');
      end
      self.hLayer_self = hLayer;
      self.attributes = caffe_('layer_get_attr', hLayer);
      self.params = [];
      for n = 1:numel(self.attributes.hBlob_blobs)
        blob = caffe.Blob(self.attributes.hBlob_blobs(n));
        if n == 1, self.params = blob; else, self.params(n) = blob; end
      end
    end

    function layer_type = type(self)
      layer_type = caffe_('layer_get_type', self.hLayer_self);
    end
  end
end
