function net = get_net(varargin)
% net = caffe.get_net(model_file, phase_name)
% net = caffe.get_net(model_file, weights_file, phase_name)
%   A net from a prototxt, in phase 'train' or 'test', with weights from a .caffemodel
%   (or .caffemodel.h5) when given.

if nargin ~= 2 && nargin ~= 3
  error('caffe:invalidArgument', ['usage: net = caffe.get_net(model_file, phase_name) or ' ...
        'caffe.get_net(model_file, weights_file, phase_name)']);
end
model_file = varargin{1};
phase_name = varargin{end};
caffe.Net.check_file(model_file, 'model_file');
if ~ischar(phase_name) || ~any(strcmp(phase_name, {'train', 'test'}))
  error('caffe:invalidArgument', 'phase_name can only be ''train'' or ''test''');
end
if nargin == 3
  caffe.Net.check_file(varargin{2}, 'weights_file');
end
net = caffe.Net(caffe_('get_net', model_file, phase_name));
if nargin == 3
  net.copy_from(varargin{2});
end
end
