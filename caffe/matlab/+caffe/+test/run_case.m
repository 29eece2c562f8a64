function result = run_case(name, fn)
% result = caffe.test.run_case(name, fn): run fn() as one test case; a failure (any error)
% is recorded with its message instead of stopping the run.
result = struct('Name', name, 'Passed', true, 'Failed', false, 'Message', '');
try
  fn();
catch err
  result.Passed = false;
  result.Failed = true;
  result.Message = err.message;
end
end
