classdef Net < handle
  % caffe.Net: a Caffe net, held by pycaffe behind the caffe_ gateway.
  %   net = caffe.Net(model_file, phase)  or  caffe.Net(model_file, weights_file, phase),
  %   phase 'train' or 'test'. Blob data is width-first (W x H x C x N), single, BGR.

  properties (Access = private)
    hNet_self
    attributes
  end
  properties (SetAccess = private)
    layer_vec
    blob_vec
    inputs
    outputs
    name2layer_index
    name2blob_index
    layer_names
    blob_names
  end

  methods
    function self = Net(varargin)
      if ~(nargin == 1 && isstruct(varargin{1}))
        % from files: caffe.get_net does the checks and wraps the new handle
        self = caffe.get_net(varargin{:});
        return
      end
      hNet = varargin{1};
      if ~(isstruct(hNet) && isfield(hNet, 'ptr') && isfield(hNet, 'init_key'))
        error('caffe:invalidHandle', 'caffe.Net: not a Net handle');
      end
      self.hNet_self = hNet;
      self.attributes = caffe_('net_get_attr', hNet);
      % Octave has no Class.empty() for classdef classes: the arrays grow from their first
      % element and stay [] for none.
      self.layer_vec = [];
      for n = 1:numel(self.attributes.hLayer_layers)
        layer = caffe.Layer(self.attributes.hLayer_layers(n));
        if n == 1, self.layer_vec = layer; else, self.layer_vec(n) = layer; end
      end
      self.blob_vec = [];
      for n = 1:numel(self.attributes.hBlob_blobs)
        blob = caffe.Blob(self.attributes.hBlob_blobs(n));
        if n == 1, self.blob_vec = blob; else, self.blob_vec(n) = blob; end
      end
      % Caffe counts from 0, MATLAB from 1.
      names = self.attributes.blob_names;
      self.inputs = names(self.attributes.input_blob_indices + 1);
      self.outputs = names(self.attributes.output_blob_indices + 1);
      self.inputs = reshape(self.inputs, [], 1);
      self.outputs = reshape(self.outputs, [], 1);
      self.layer_names = self.attributes.layer_names;
      self.blob_names = names;
      self.name2layer_index = caffe.Net.index_map(self.layer_names);
      self.name2blob_index = caffe.Net.index_map(names);
    end

    function delete(self)
      if ~isempty(self.hNet_self)
        try
          caffe_('delete_net', self.hNet_self);
        catch
          % a stale handle (after caffe.reset_all) has nothing left to free
        end
      end
    end

    function layer = layers(self, layer_name)
      layer = self.layer_vec(self.find_index(self.name2layer_index, layer_name, 'layer'));
    end

    function blob = blobs(self, blob_name)
      blob = self.blob_vec(self.find_index(self.name2blob_index, blob_name, 'blob'));
    end

    function blob = params(self, layer_name, blob_index)
      if ~(isnumeric(blob_index) && isscalar(blob_index))
        error('caffe:invalidArgument', 'caffe.Net.params: blob_index must be a scalar');
      end
      layer = self.layers(layer_name);
      if blob_index < 1 || blob_index > numel(layer.params) || blob_index ~= round(blob_index)
        error('caffe:invalidArgument', ...
              'caffe.Net.params: layer ''%s'' has %d param blobs, no blob %g', ...
              layer_name, numel(layer.params), blob_index);
      end
      blob = layer.params(blob_index);
    end

    function forward_prefilled(self)
      caffe_('net_forward', self.hNet_self);
    end

    function backward_prefilled(self)
      caffe_('net_backward', self.hNet_self);
    end

    function res = forward(self, input_data)
      % res = net.forward({input1, ...}): fill the input blobs, run forward, return the
      % output blobs' data in a cell column.
      self.check_cell(input_data, self.inputs, 'input_data', 'input');
      for n = 1:numel(self.inputs)
        self.blobs(self.inputs{n}).set_data(input_data{n});
      end
      self.forward_prefilled();
      res = cell(numel(self.outputs), 1);
      for n = 1:numel(self.outputs)
        res{n} = self.blobs(self.outputs{n}).get_data();
      end
    end

    function res = backward(self, output_diff)
      % res = net.backward({diff1, ...}): set the output blobs' diffs, run backward, return
      % the input blobs' diffs in a cell column.
      self.check_cell(output_diff, self.outputs, 'output_diff', 'output');
      for n = 1:numel(self.outputs)
        self.blobs(self.outputs{n}).set_diff(output_diff{n});
      end
      self.backward_prefilled();
      res = cell(numel(self.inputs), 1);
      for n = 1:numel(self.inputs)
        res{n} = self.blobs(self.inputs{n}).get_diff();
      end
    end

    function copy_from(self, weights_file)
      caffe.Net.check_file(weights_file, 'weights_file');
      caffe_('net_copy_from', self.hNet_self, weights_file);
    end

    function reshape(self)
      caffe_('net_reshape', self.hNet_self);
    end

    function save(self, weights_file)
      if ~ischar(weights_file)
        error('caffe:invalidArgument', 'caffe.Net.save: weights_file must be a string');
      end
      caffe_('net_save', self.hNet_self, weights_file);
    end
  end

  methods (Access = private)
    function index = find_index(~, map, name, what)
      if ~ischar(name)
        error('caffe:invalidArgument', 'caffe.Net: %s_name must be a string', what);
      end
      if ~isKey(map, name)
        error('caffe:unknownName', 'caffe.Net: the net has no %s named ''%s''', what, name);
      end
      index = map(name);
    end

    function check_cell(~, values, names, what, kind)
      if ~iscell(values)
        error('caffe:invalidArgument', 'caffe.Net: %s must be a cell array', what);
      end
      if numel(values) ~= numel(names)
        error('caffe:invalidArgument', ...
              'caffe.Net: %s has %d cells but the net has %d %s blobs', ...
              what, numel(values), numel(names), kind);
      end
    end
  end

  methods (Static, Hidden)
    function map = index_map(names)
      if isempty(names)
        map = containers.Map('KeyType', 'char', 'ValueType', 'double');
      else
        map = containers.Map(reshape(names, 1, []), 1:numel(names));
      end
    end

    function check_file(filename, what)
      % kept here, not in private/: Octave's classdef methods do not see private functions
      if ~ischar(filename)
        error('caffe:invalidArgument', '%s must be a string', what);
      end
      if ~exist(filename, 'file')
        error('caffe:fileNotFound', '%s does not exist', filename);
      end
    end
  end
end
