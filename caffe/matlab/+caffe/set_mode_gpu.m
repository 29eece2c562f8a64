function set_mode_gpu()
% caffe.set_mode_gpu(): nets and solvers made from now on run on the GPU (caffe.set_device
% picks which); without a CUDA device pycaffe warns and stays on the CPU.
caffe_('set_mode_gpu');
end
