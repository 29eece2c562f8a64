function results = test_net()
% results = caffe.test.test_net(): matcaffe's Net, Layer and Blob flows on a small net
% (get/set of data and diffs, reshape, params, type, forward/backward, inputs/outputs, save
% and reload).
num_output = 13;
model_file = caffe.test.simple_net_file(num_output);
cleanup = onCleanup(@() delete(model_file));
net = caffe.Net(model_file, 'train');
caffe.get_net(model_file, 'train');     % a second net, dropped at once
label = net.blobs('label');
label.set_data(randi(num_output - 1, label.shape));

results = [ ...
  caffe.test.run_case('test_net/blob', @() check_blob(net)), ...
  caffe.test.run_case('test_net/layer', @() check_layer(net)), ...
  caffe.test.run_case('test_net/forward_backward', @() check_forward_backward(net)), ...
  caffe.test.run_case('test_net/inputs_outputs', @() check_inputs_outputs(net)), ...
  caffe.test.run_case('test_net/save_and_read', @() check_save_and_read(net, num_output))];
end

function check_blob(net)
data = net.blobs('data');
data.set_data(10 * ones(data.shape));
caffe.test.verify_equal(data.get_data(), 10 * ones(data.shape, 'single'), 'data after set_data');
data.set_diff(-2 * ones(data.shape));
caffe.test.verify_equal(data.get_diff(), -2 * ones(data.shape, 'single'), 'diff after set_diff');
before = data.shape;
data.reshape([6 5 4 3 2 1]);
caffe.test.verify_equal(data.shape, [6 5 4 3 2 1], 'shape after reshape');
data.reshape(before);
net.reshape();
caffe.test.verify_equal(data.shape, before, 'shape after reshaping back');
end

function check_layer(net)
caffe.test.verify_equal(net.params('conv', 1).shape, [2 2 2 11], 'conv weights shape');
caffe.test.verify_equal(net.layers('conv').params(2).shape, 11, 'conv bias shape');
caffe.test.verify_equal(net.layers('conv').type(), 'Convolution', 'conv type');
end

function check_forward_backward(net)
net.forward_prefilled();
net.backward_prefilled();
loss = net.blobs('loss').get_data();
if ~(isscalar(loss) && isfinite(loss) && loss > 0)
  error('caffe:testFailed', 'the loss after forward is %g, not a positive number', loss);
end
grad = net.params('ip', 1).get_diff();
if ~any(grad(:))
  error('caffe:testFailed', 'backward left the inner product''s weight gradient all zero');
end
end

function check_inputs_outputs(net)
caffe.test.verify_equal(net.inputs, cell(0, 1), 'inputs');
caffe.test.verify_equal(net.outputs, {'loss'}, 'outputs');
end

function check_save_and_read(net, num_output)
weights_file = [tempname() '.caffemodel'];
net.save(weights_file);
model_file = caffe.test.simple_net_file(num_output);
net2 = caffe.Net(model_file, 'train');
net2.copy_from(weights_file);
net3 = caffe.Net(model_file, weights_file, 'train');
delete(model_file);
delete(weights_file);
for l = 1:numel(net.layer_vec)
  for i = 1:numel(net.layer_vec(l).params)
    what = sprintf('layer %s param %d', net.layer_names{l}, i);
    caffe.test.verify_equal(net2.layer_vec(l).params(i).get_data(), ...
                            net.layer_vec(l).params(i).get_data(), [what ' (copy_from)']);
    caffe.test.verify_equal(net3.layer_vec(l).params(i).get_data(), ...
                            net.layer_vec(l).params(i).get_data(), [what ' (Net with weights)']);
  end
end
end
