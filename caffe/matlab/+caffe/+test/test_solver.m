function results = test_solver()
% results = caffe.test.test_solver(): a solver's steps, solve to max_iter, snapshot and
% restore.
num_output = 13;
folder = tempname();
mkdir(folder);
cleanup = onCleanup(@() confirm_recursive_rmdir_off(folder));
model_file = caffe.test.simple_net_file(num_output);
solver_file = fullfile(folder, 'solver.prototxt');
fid = fopen(solver_file, 'w');
fprintf(fid, 'net: "%s"\n', model_file);
fprintf(fid, '%s\n', 'test_iter: 10 test_interval: 10 base_lr: 0.01 momentum: 0.9', ...
        'weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75', ...
        'display: 100 max_iter: 100 snapshot_after_train: false', ...
        sprintf('snapshot_prefix: "%s"', fullfile(folder, 'snap')));
fclose(fid);
solver = caffe.Solver(solver_file);
caffe.get_solver(solver_file);          % a second solver, dropped at once
delete(model_file);
nets = {solver.net, solver.test_nets(1)};
for n = 1:numel(nets)
  label = nets{n}.blobs('label');
  label.set_data(randi(num_output - 1, label.shape));
end
results = [ ...
  caffe.test.run_case('test_solver/solve', @() check_solve(solver)), ...
  caffe.test.run_case('test_solver/snapshot_restore', @() check_restore(solver, folder))];
end

function check_solve(solver)
caffe.test.verify_equal(solver.iter(), 0, 'iter before training');
caffe.test.verify_equal(solver.max_iter(), 100, 'max_iter');
solver.step(30);
caffe.test.verify_equal(solver.iter(), 30, 'iter after step(30)');
solver.solve();
caffe.test.verify_equal(solver.iter(), 100, 'iter after solve');
end

function check_restore(solver, folder)
solver.snapshot();
state = fullfile(folder, sprintf('snap_iter_%d.solverstate', solver.iter()));
if ~exist(state, 'file')
  error('caffe:testFailed', 'snapshot wrote no %s', state);
end
weights = solver.net.params('ip', 1).get_data();
iter = solver.iter();
solver.step(5);
caffe.test.verify_equal(solver.iter(), iter + 5, 'iter after 5 more steps');
solver.restore(state);
caffe.test.verify_equal(solver.iter(), iter, 'iter after restore');
caffe.test.verify_equal(solver.net.params('ip', 1).get_data(), weights, 'weights after restore');
end

function confirm_recursive_rmdir_off(folder)
if exist(folder, 'dir')
  if exist('OCTAVE_VERSION', 'builtin')
    confirm_recursive_rmdir(false, 'local');   % Octave asks before a recursive rmdir
  end
  rmdir(folder, 's');
end
end
