function reset_all()
% caffe.reset_all(): forget every solver and net; handles made before are stale from now on
% (using one is a caffe:invalidHandle error).
caffe_('reset');
end
