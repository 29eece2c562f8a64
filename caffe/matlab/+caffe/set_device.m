function set_device(device_id)
% caffe.set_device(device_id): the GPU (counted from 0) for nets made from now on.
if ~(isnumeric(device_id) && isscalar(device_id) && device_id >= 0 && device_id == round(device_id))
  error('caffe:invalidArgument', 'device_id must be a non-negative integer');
end
caffe_('set_device', double(device_id));
end
