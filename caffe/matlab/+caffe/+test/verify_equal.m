function verify_equal(actual, expected, what)
% caffe.test.verify_equal(actual, expected, what): error unless the two are equal, class
% and size included (as matlab.unittest's verifyEqual).
if ~(strcmp(class(actual), class(expected)) && isequal(size(actual), size(expected)) ...
     && isequal(actual, expected))
  error('caffe:testFailed', '%s: expected %s %s, got %s %s', what, class(expected), ...
        mat2str(size(expected)), class(actual), mat2str(size(actual)));
end
end
