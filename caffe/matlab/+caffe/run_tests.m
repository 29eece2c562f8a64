function results = run_tests()
% results = caffe.run_tests()
%   Run matcaffe's own tests (caffe.test.test_net, test_solver, test_io) on the CPU and
%   return one result per test case (struct array: Name, Passed, Failed, Message). Works in
%   Octave, which has no matlab.unittest. Errors if a case failed, after running them all.

caffe.set_mode_cpu();
caffe.reset_all();
results = [caffe.test.test_net(), caffe.test.test_solver(), caffe.test.test_io()];
caffe.reset_all();
failed = results([results.Failed]);
fprintf('caffe.run_tests: %d passed, %d failed\n', sum([results.Passed]), numel(failed));
for n = 1:numel(failed)
  fprintf('  FAILED %s: %s\n', failed(n).Name, failed(n).Message);
end
if ~isempty(failed) && nargout == 0
  error('caffe:testsFailed', '%d of matcaffe''s tests failed', numel(failed));
end
end
