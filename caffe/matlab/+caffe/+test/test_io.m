function results = test_io()
% results = caffe.test.test_io(): a mean written with caffe.io.write_mean reads back equal.
results = caffe.test.run_case('test_io/read_write_mean', @check_read_write_mean);
end

function check_read_write_mean()
mean_data = 255 * rand(200, 300, 3, 'single');
mean_file = [tempname() '.binaryproto'];
caffe.io.write_mean(mean_data, mean_file);
read_back = caffe.io.read_mean(mean_file);
delete(mean_file);
caffe.test.verify_equal(read_back, mean_data, 'mean read back');
end
