classdef io
  % caffe.io: images and mean files in Caffe's layout (W x H x C, BGR, single).

  methods (Static)
    function im_data = load_image(im_file)
      % im_data = caffe.io.load_image(im_file): W x H x C single, BGR for colour images
      caffe.Net.check_file(im_file, 'im_file');
      im_data = imread(im_file);
      if size(im_data, 3) == 3
        im_data = im_data(:, :, [3 2 1]);    % RGB -> BGR
      end
      im_data = single(permute(im_data, [2 1 3]));   % width first
    end

    function mean_data = read_mean(mean_proto_file)
      % mean_data = caffe.io.read_mean(file): a .binaryproto mean as W x H x C, BGR
      caffe.Net.check_file(mean_proto_file, 'mean_proto_file');
      mean_data = caffe_('read_mean', mean_proto_file);
    end

    function write_mean(mean_data, mean_proto_file)
      % caffe.io.write_mean(mean_data, file): W x H x C single (BGR) to a .binaryproto
      if ~ischar(mean_proto_file)
        error('caffe:invalidArgument', 'mean_proto_file must be a string');
      end
      if ~isa(mean_data, 'single')
        error('caffe:invalidArgument', 'mean_data must be a SINGLE matrix');
      end
      caffe_('write_mean', mean_data, mean_proto_file);
    end
  end
end
