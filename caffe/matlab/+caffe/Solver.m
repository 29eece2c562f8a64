classdef Solver < handle
  % caffe.Solver: a solver from a solver prototxt (caffe.Solver(solver_file)), with its
  % train net (net) and test nets (test_nets). Ctrl-C stops solve/step between two
  % iterations (error caffe:interrupted); the solver can go on afterwards.

  properties (Access = private)
    hSolver_self
    attributes
  end
  properties (SetAccess = private)
    net
    test_nets
  end

  methods
    function self = Solver(varargin)
      if ~(nargin == 1 && isstruct(varargin{1}))
        self = caffe.get_solver(varargin{:});
        return
      end
      hSolver = varargin{1};
      if ~(isstruct(hSolver) && isfield(hSolver, 'ptr') && isfield(hSolver, 'init_key'))
        error('caffe:invalidHandle', 'caffe.Solver: not a Solver handle');
      end
      self.hSolver_self = hSolver;
      self.attributes = caffe_('solver_get_attr', hSolver);
      self.net = caffe.Net(self.attributes.hNet_net);
      self.test_nets = [];
      for n = 1:numel(self.attributes.hNet_test_nets)
        test_net = caffe.Net(self.attributes.hNet_test_nets(n));
        if n == 1, self.test_nets = test_net; else, self.test_nets(n) = test_net; end
      end
    end

    function delete(self)
      if ~isempty(self.hSolver_self)
        try
          caffe_('delete_solver', self.hSolver_self);
        catch
          % a stale handle (after caffe.reset_all) has nothing left to free
        end
      end
    end

    function iter = iter(self)
      iter = caffe_('solver_get_iter', self.hSolver_self);
    end

    function n = max_iter(self)
      n = caffe_('solver_get_max_iter', self.hSolver_self);
    end

    function restore(self, snapshot_filename)
      caffe.Net.check_file(snapshot_filename, 'snapshot_filename');
      caffe_('solver_restore', self.hSolver_self, snapshot_filename);
    end

    function snapshot(self)
      % write <snapshot_prefix>_iter_N.caffemodel and .solverstate now
      caffe_('solver_snapshot', self.hSolver_self);
    end

    function solve(self)
      caffe_('solver_solve', self.hSolver_self);
    end

    function step(self, iters)
      if ~(isnumeric(iters) && isscalar(iters) && iters > 0 && iters == round(iters))
        error('caffe:invalidArgument', 'caffe.Solver.step: iters must be a positive integer');
      end
      caffe_('solver_step', self.hSolver_self, double(iters));
    end
  end
end
