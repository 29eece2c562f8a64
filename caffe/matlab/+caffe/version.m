function version_str = version()
% caffe.version(): the Caffe version pycaffe implements ('1.0.0').
version_str = caffe_('version');
end
