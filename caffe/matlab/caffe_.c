/*
 * caffe_: matcaffe's MEX gateway, forwarding BVLC's caffe_(command, args...) protocol to
 * pycaffe (caffe/matlab/bridge.py) in a CPython embedded in MATLAB or GNU Octave.
 *
 * It uses the MEX C API only, so MATLAB's `mex` and Octave's `mkoctfile --mex` both build it
 * (`python -m caffe.matlab build` does it). Everything about Caffe lives in the bridge; this
 * file converts values, holds the interpreter and turns the bridge's errors into MATLAB
 * errors with their `caffe:...` identifiers.
 *
 *  - The interpreter starts on the first call, with the Python the gateway was built for as
 *    program name (so that a virtual environment's pyvenv.cfg is honoured) and without
 *    Python's signal handlers: SIGINT belongs to the host.
 *  - libpython is promoted to global symbol visibility before Python starts: the host loaded
 *    this MEX file privately, and Python's extension modules need libpython's symbols.
 *  - The interpreter is never finalised and the MEX file is locked (mexLock): a cleared MEX
 *    file cannot start CPython twice.
 *  - Arrays: a single array goes in as a read-only memoryview of its own memory (no copy),
 *    released when the call returns; blob values come back in one copy.
 *  - Ctrl-C during solver_step / solver_solve sets a flag the solver reads between
 *    iterations (a SIGINT handler for Octave and MATLAB -nodesktop, and MATLAB's
 *    utIsInterruptPending where it exists); the bridge then stops and reports
 *    caffe:interrupted. BVLC ignored Ctrl-C there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "mex.h"

#include "caffe_config.h" /* PYCAFFE_PYTHON, PYCAFFE_SOURCE: written by the build */

static PyObject *g_dispatch;          /* caffe.matlab.bridge.dispatch */
static int g_state;                   /* 0: not started, 1: ready, -1: failed */
static char g_start_error[4096];
static volatile sig_atomic_t g_interrupt;
typedef _Bool (*pending_fn)(void);
static pending_fn g_ut_pending;       /* MATLAB's utIsInterruptPending, if the host has it */
static struct sigaction g_host_sigint;

/* -- the _matcaffe module: the interrupt flag, for the bridge -------------------------- */
static PyObject *take_interrupt(PyObject *self, PyObject *unused) {
  int pending = g_interrupt;
  (void)self;
  (void)unused;
  g_interrupt = 0;
  if (!pending && g_ut_pending != NULL && g_ut_pending()) pending = 1;
  return PyBool_FromLong(pending);
}

static PyMethodDef g_methods[] = {
    {"take_interrupt", take_interrupt, METH_NOARGS,
     "Whether Ctrl-C was pressed since the last call (and forget it)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef g_module = {PyModuleDef_HEAD_INIT, "_matcaffe",
                                      "The caffe_ MEX gateway's side of the bridge.", -1,
                                      g_methods, NULL, NULL, NULL, NULL};

static void on_sigint(int sig) {
  (void)sig;
  g_interrupt = 1;
}

static void catch_sigint(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  g_interrupt = 0;
  sigaction(SIGINT, &sa, &g_host_sigint);
}

static void restore_sigint(void) { sigaction(SIGINT, &g_host_sigint, NULL); }

/* The text of the Python exception being raised (for start-up failures). */
static void describe_python_error(const char *what) {
  PyObject *type, *value, *tb, *text = NULL;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != NULL) text = PyObject_Str(value);
  snprintf(g_start_error, sizeof g_start_error, "%s: %s: %s", what,
           type ? ((PyTypeObject *)type)->tp_name : "error",
           text && PyUnicode_Check(text) ? PyUnicode_AsUTF8(text) : "(no message)");
  PyErr_Clear();
  Py_XDECREF(text);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

static const char BOOT[] =
    "import sys\n"
    "sys._matcaffe_host = True\n"
    "if not getattr(sys, 'argv', None):\n"
    "    sys.argv = ['matcaffe']\n"
    "try:\n"
    "    import caffe.matlab.bridge as _bridge\n"
    "except ImportError:\n"
    "    if source in sys.path:\n"
    "        raise\n"
    "    sys.path.append(source)\n"
    "    for _name in [m for m in sys.modules if m == 'caffe' or m.startswith('caffe.')]:\n"
    "        del sys.modules[_name]\n"
    "    import caffe.matlab.bridge as _bridge\n"
    "dispatch = _bridge.dispatch\n"
    "warnings = list(_bridge.startup.WARNINGS)\n";

static int start(void) {
  Dl_info info;
  PyGILState_STATE gil;
  PyObject *globals, *ran, *module, *warnings;
  int owns = 0;
  Py_ssize_t i;

  if (g_state) return g_state;
  g_state = -1;
  /* Python's extension modules look up libpython's symbols globally. */
  if (dladdr((void *)&Py_IsInitialized, &info) && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  g_ut_pending = (pending_fn)dlsym(RTLD_DEFAULT, "utIsInterruptPending");

  if (!Py_IsInitialized()) {
    PyConfig config;
    PyStatus status;
    const char *python = getenv("PYCAFFE_PYTHON");
    if (python == NULL || python[0] == '\0') python = PYCAFFE_PYTHON;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    status = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
      snprintf(g_start_error, sizeof g_start_error,
               "could not start Python (%s): %s", python,
               status.err_msg ? status.err_msg : "unknown error");
      return g_state;
    }
    owns = 1;
  } else {
    gil = PyGILState_Ensure();
  }

  module = PyModule_Create(&g_module);
  globals = PyDict_New();
  if (module == NULL || globals == NULL ||
      PyDict_SetItemString(PyImport_GetModuleDict(), "_matcaffe", module) < 0 ||
      PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
    describe_python_error("could not set up the gateway");
  } else {
    PyObject *source = PyUnicode_DecodeFSDefault(PYCAFFE_SOURCE);
    PyDict_SetItemString(globals, "source", source);
    Py_XDECREF(source);
    ran = PyRun_String(BOOT, Py_file_input, globals, globals);
    if (ran == NULL) {
      describe_python_error("could not import pycaffe (caffe.matlab.bridge)");
    } else {
      Py_DECREF(ran);
      g_dispatch = PyDict_GetItemString(globals, "dispatch");
      Py_XINCREF(g_dispatch);
      warnings = PyDict_GetItemString(globals, "warnings");
      for (i = 0; warnings != NULL && i < PyList_Size(warnings); i++) {
        PyObject *w = PyList_GetItem(warnings, i);
        mexWarnMsgIdAndTxt(PyUnicode_AsUTF8(PyTuple_GetItem(w, 0)), "%s",
                           PyUnicode_AsUTF8(PyTuple_GetItem(w, 1)));
      }
      g_state = 1;
    }
  }
  Py_XDECREF(module);
  Py_XDECREF(globals);
  if (owns)
    PyEval_SaveThread(); /* each call takes the GIL again */
  else
    PyGILState_Release(gil);
  return g_state;
}

/* -- MATLAB -> Python --------------------------------------------------------------------- */
static PyObject *dims_tuple(const mxArray *a) {
  mwSize n = mxGetNumberOfDimensions(a), i;
  const mwSize *dims = mxGetDimensions(a);
  PyObject *t = PyTuple_New((Py_ssize_t)n);
  for (i = 0; t != NULL && i < n; i++)
    PyTuple_SET_ITEM(t, (Py_ssize_t)i, PyLong_FromSize_t((size_t)dims[i]));
  return t;
}

static PyObject *to_python(const mxArray *a, PyObject *views) {
  static float empty;
  if (mxIsChar(a)) {
    char *s = mxArrayToString(a);
    PyObject *r = PyUnicode_DecodeFSDefault(s ? s : "");
    mxFree(s);
    return r;
  }
  if (mxIsStruct(a)) {
    const mxArray *ptr = mxGetField(a, 0, "ptr"), *key = mxGetField(a, 0, "init_key");
    if (mxGetNumberOfElements(a) == 1 && ptr != NULL && key != NULL && mxIsUint64(ptr) &&
        mxGetNumberOfElements(ptr) == 1 && mxIsDouble(key) &&
        mxGetNumberOfElements(key) == 1)
      return Py_BuildValue("(sKd)", "handle",
                           (unsigned long long)*(uint64_t *)mxGetData(ptr),
                           mxGetScalar(key));
    return Py_BuildValue("(ss)", "other", "struct");
  }
  if (mxIsSingle(a) && !mxIsComplex(a)) {
    size_t n = mxGetNumberOfElements(a);
    void *data = n ? mxGetData(a) : (void *)&empty;
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)(n * sizeof(float)),
                                             PyBUF_READ);
    PyObject *dims = dims_tuple(a), *r = NULL;
    if (view != NULL && dims != NULL && PyList_Append(views, view) == 0)
      r = Py_BuildValue("(sOO)", "single", view, dims);
    Py_XDECREF(view);
    Py_XDECREF(dims);
    return r;
  }
  if (mxIsDouble(a) && !mxIsComplex(a)) {
    size_t n = mxGetNumberOfElements(a), i;
    const double *v = mxGetPr(a);
    PyObject *list = PyList_New((Py_ssize_t)n), *dims = dims_tuple(a), *r = NULL;
    for (i = 0; list != NULL && i < n; i++)
      PyList_SET_ITEM(list, (Py_ssize_t)i, PyFloat_FromDouble(v[i]));
    if (list != NULL && dims != NULL) r = Py_BuildValue("(sOO)", "double", list, dims);
    Py_XDECREF(list);
    Py_XDECREF(dims);
    return r;
  }
  if (mxIsNumeric(a) || mxIsLogical(a)) {
    PyObject *dims = dims_tuple(a);
    PyObject *r = dims ? Py_BuildValue("(ssO)", "numeric", mxGetClassName(a), dims) : NULL;
    Py_XDECREF(dims);
    return r;
  }
  return Py_BuildValue("(ss)", "other", mxGetClassName(a));
}

/* -- Python -> MATLAB --------------------------------------------------------------------- */
static mxArray *from_python(PyObject *v);

static mxArray *handles(PyObject *ids, double key) {
  static const char *fields[] = {"ptr", "init_key"};
  Py_ssize_t n = PyList_Size(ids), i;
  mxArray *s = mxCreateStructMatrix((mwSize)n, 1, 2, fields);
  for (i = 0; i < n; i++) {
    mxArray *ptr = mxCreateNumericMatrix(1, 1, mxUINT64_CLASS, mxREAL);
    *(uint64_t *)mxGetData(ptr) = (uint64_t)PyLong_AsUnsignedLongLong(PyList_GetItem(ids, i));
    mxSetField(s, (mwIndex)i, "ptr", ptr);
    mxSetField(s, (mwIndex)i, "init_key", mxCreateDoubleScalar(key));
  }
  return s;
}

static mxArray *numbers(PyObject *list, int column) {
  Py_ssize_t n = PyList_Size(list), i;
  mxArray *m = column ? mxCreateDoubleMatrix((mwSize)n, 1, mxREAL)
                      : mxCreateDoubleMatrix(1, (mwSize)n, mxREAL);
  double *p = mxGetPr(m);
  for (i = 0; i < n; i++) p[i] = PyFloat_AsDouble(PyList_GetItem(list, i));
  return m;
}

static mxArray *single_array(PyObject *array, PyObject *dims) {
  Py_buffer buf;
  mwSize nd = (mwSize)PyTuple_Size(dims), i, d[32];
  mxArray *m;
  if (nd > 32 || PyObject_GetBuffer(array, &buf, PyBUF_C_CONTIGUOUS) < 0) return NULL;
  for (i = 0; i < nd; i++) d[i] = (mwSize)PyLong_AsSize_t(PyTuple_GetItem(dims, (Py_ssize_t)i));
  m = mxCreateNumericArray(nd, d, mxSINGLE_CLASS, mxREAL);
  if (buf.len) memcpy(mxGetData(m), buf.buf, (size_t)buf.len);
  PyBuffer_Release(&buf);
  return m;
}

static mxArray *fields(PyObject *items) {
  Py_ssize_t n = PyList_Size(items), i;
  const char *names[16];
  mxArray *s;
  if (n > 16) return NULL;
  for (i = 0; i < n; i++) names[i] = PyUnicode_AsUTF8(PyTuple_GetItem(PyList_GetItem(items, i), 0));
  s = mxCreateStructMatrix(1, 1, (int)n, names);
  for (i = 0; i < n; i++) {
    mxArray *value = from_python(PyTuple_GetItem(PyList_GetItem(items, i), 1));
    if (value == NULL) return NULL;
    mxSetField(s, 0, names[i], value);
  }
  return s;
}

static mxArray *from_python(PyObject *v) {
  const char *tag;
  if (PyUnicode_Check(v)) return mxCreateString(PyUnicode_AsUTF8(v));
  if (PyFloat_Check(v) || PyLong_Check(v)) return mxCreateDoubleScalar(PyFloat_AsDouble(v));
  if (!PyTuple_Check(v) || PyTuple_Size(v) < 2) return NULL;
  tag = PyUnicode_AsUTF8(PyTuple_GetItem(v, 0));
  if (tag == NULL) return NULL;
  if (!strcmp(tag, "handles"))
    return handles(PyTuple_GetItem(v, 1), PyFloat_AsDouble(PyTuple_GetItem(v, 2)));
  if (!strcmp(tag, "column") || !strcmp(tag, "row"))
    return numbers(PyTuple_GetItem(v, 1), tag[0] == 'c');
  if (!strcmp(tag, "single")) return single_array(PyTuple_GetItem(v, 1), PyTuple_GetItem(v, 2));
  if (!strcmp(tag, "struct")) return fields(PyTuple_GetItem(v, 1));
  if (!strcmp(tag, "cellstr")) {
    PyObject *list = PyTuple_GetItem(v, 1);
    Py_ssize_t n = PyList_Size(list), i;
    mxArray *c = mxCreateCellMatrix((mwSize)n, 1);
    for (i = 0; i < n; i++)
      mxSetCell(c, (mwIndex)i, mxCreateString(PyUnicode_AsUTF8(PyList_GetItem(list, i))));
    return c;
  }
  return NULL;
}

/* -- entry point -------------------------------------------------------------------------- */
void mexFunction(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[]) {
  static char ident[128], message[8192];
  PyGILState_STATE gil;
  PyObject *args, *views, *result = NULL;
  mxArray *out = NULL;
  char *cmd;
  int failed = 0, printing = 0, interruptible, i;
  Py_ssize_t k;
  (void)nlhs;

  if (!mexIsLocked()) mexLock(); /* CPython cannot be started twice in one process */
  if (nrhs < 1 || !mxIsChar(prhs[0]))
    mexErrMsgIdAndTxt("caffe:usage", "Usage: caffe_(api_command, arg1, arg2, ...)");
  if (start() != 1) mexErrMsgIdAndTxt("caffe:init", "caffe_: %s", g_start_error);

  cmd = mxArrayToString(prhs[0]);
  gil = PyGILState_Ensure();
  views = PyList_New(0);
  args = PyTuple_New(nrhs - 1);
  for (i = 1; args != NULL && views != NULL && i < nrhs; i++) {
    PyObject *a = to_python(prhs[i], views);
    if (a == NULL) {
      failed = 1;
      break;
    }
    PyTuple_SET_ITEM(args, i - 1, a);
  }
  if (args != NULL && views != NULL && !failed) {
    interruptible = !strcmp(cmd, "solver_step") || !strcmp(cmd, "solver_solve");
    if (interruptible) catch_sigint();
    result = PyObject_CallFunction(g_dispatch, "sO", cmd, args);
    if (interruptible) restore_sigint();
  }
  /* The arrays' memory belongs to the host: no Python object may keep it. */
  for (k = 0; views != NULL && k < PyList_Size(views); k++) {
    PyObject *r = PyObject_CallMethod(PyList_GetItem(views, k), "release", NULL);
    Py_XDECREF(r);
  }
  if (result == NULL) {
    failed = 1;
    snprintf(ident, sizeof ident, "caffe:gateway");
    describe_python_error("internal error in the gateway");
    snprintf(message, sizeof message, "%s", g_start_error);
  } else if (PyTuple_Check(result) && PyTuple_Size(result) == 3 &&
             PyUnicode_Check(PyTuple_GetItem(result, 0)) &&
             !strcmp(PyUnicode_AsUTF8(PyTuple_GetItem(result, 0)), "error")) {
    failed = 1;
    snprintf(ident, sizeof ident, "%s", PyUnicode_AsUTF8(PyTuple_GetItem(result, 1)));
    snprintf(message, sizeof message, "%s", PyUnicode_AsUTF8(PyTuple_GetItem(result, 2)));
  } else if (PyTuple_Check(result) && PyTuple_Size(result) == 2 &&
             PyUnicode_Check(PyTuple_GetItem(result, 0)) &&
             !strcmp(PyUnicode_AsUTF8(PyTuple_GetItem(result, 0)), "print")) {
    printing = 1;
    snprintf(message, sizeof message, "%s", PyUnicode_AsUTF8(PyTuple_GetItem(result, 1)));
  } else if (result != Py_None) {
    out = from_python(result);
    if (out == NULL) {
      failed = 1;
      snprintf(ident, sizeof ident, "caffe:gateway");
      snprintf(message, sizeof message, "caffe_('%s'): the bridge answered a value the "
               "gateway cannot convert", cmd);
      PyErr_Clear();
    }
  }
  Py_XDECREF(result);
  Py_XDECREF(args);
  Py_XDECREF(views);
  PyGILState_Release(gil);
  mxFree(cmd);
  if (failed) mexErrMsgIdAndTxt(ident, "%s", message);
  if (printing) mexPrintf("%s", message);
  if (out != NULL) plhs[0] = out;
}
