/*
 * libFuzzer target for native/ordered.c (the ordered lean path in C).
 *   native/fuzz/run.sh ordered SECONDS
 *
 * ordered.c works on the proxy's Python objects, so the target embeds
 * CPython: ordered.c is compiled in (instrumented, with ASan/UBSan) and
 * registered as agent.proxy._ordered before the proxy is imported; the rest
 * of the proxy and the codecs are the built modules of the tree. Each input
 * is decoded by fuzz_ordered_driver.py into a scenario (client reads cut
 * anywhere, upstream replies, errors, timeouts, clients going away, limits)
 * that runs once with the C path and once with the Python path: any Python
 * exception, or any difference in what the two leave behind, aborts (a
 * finding), as does any ASan/UBSan report inside ordered.c.
 *
 * Environment (set by run.sh): NODEMESH_FUZZ_ROOT (the repository),
 * NODEMESH_FUZZ_SITE (site-packages with the proxy's dependencies).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

PyMODINIT_FUNC PyInit__ordered(void);

static PyObject *one;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_ordered: %s\n", what);
    if (PyErr_Occurred())
        PyErr_Print();
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *root = getenv("NODEMESH_FUZZ_ROOT"), *site = getenv("NODEMESH_FUZZ_SITE");
    if (root == NULL || site == NULL)
        fail("set NODEMESH_FUZZ_ROOT and NODEMESH_FUZZ_SITE (native/fuzz/run.sh does)");
    setenv("PYTHONMALLOC", "malloc", 1);          /* heap errors visible to ASan */
    setenv("NODEMESH_ORDERED_C", "0", 1);         /* the driver turns the C path on */
    Py_Initialize();
    PyObject *mod = PyInit__ordered();
    if (mod == NULL || PyDict_SetItemString(PyImport_GetModuleDict(), "agent.proxy._ordered",
                                            mod) < 0)
        fail("cannot register agent.proxy._ordered");
    Py_DECREF(mod);
    PyObject *sys_path = PySys_GetObject("path");
    PyObject *r = PyUnicode_FromString(root);
    PyObject *f = PyUnicode_FromFormat("%s/native/fuzz", root);
    if (sys_path == NULL || r == NULL || f == NULL || PyList_Insert(sys_path, 0, r) < 0 ||
        PyList_Insert(sys_path, 0, f) < 0)
        fail("cannot set sys.path");
    Py_DECREF(r);
    Py_DECREF(f);
    PyObject *site_mod = PyImport_ImportModule("site");
    PyObject *added = site_mod ? PyObject_CallMethod(site_mod, "addsitedir", "s", site) : NULL;
    Py_XDECREF(added);
    Py_XDECREF(site_mod);
    PyObject *driver = added ? PyImport_ImportModule("fuzz_ordered_driver") : NULL;
    one = driver ? PyObject_GetAttrString(driver, "one") : NULL;
    Py_XDECREF(driver);
    if (one == NULL)
        fail("cannot load fuzz_ordered_driver.one");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *r = PyObject_CallFunction(one, "y#", (const char *)data, (Py_ssize_t)size);
    if (r == NULL)
        fail("the scenario failed");
    Py_DECREF(r);
    return 0;
}
