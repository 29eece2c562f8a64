function solver = get_solver(solver_file)
% solver = caffe.get_solver(solver_file)
%   A solver (SGD, Adam, ... as its type says) from a solver prototxt.

caffe.Net.check_file(solver_file, 'solver_file');
solver = caffe.Solver(caffe_('get_solver', solver_file));
end
