function set_mode_cpu()
% caffe.set_mode_cpu(): nets and solvers made from now on run on the CPU.
caffe_('set_mode_cpu');
end
