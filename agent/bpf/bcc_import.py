"""Import Debian's bcc (python3-bpfcc) from any virtual environment.

PyPI's `bcc` is an unrelated package; the real one is a distribution
package. Its dist-packages directory is appended (not prepended) to
sys.path, so nothing in the venv is shadowed.
"""

import glob
import importlib
import sys

DIST_DIRS = ["/usr/lib/python3/dist-packages"] + sorted(glob.glob("/usr/lib/python3*/site-packages"))


def import_bcc():
    try:
        bcc = importlib.import_module("bcc")
        if hasattr(bcc, "BPF"):
            return bcc
    except ImportError:
        pass
    for d in DIST_DIRS:
        if glob.glob(d + "/bcc/__init__.py") and d not in sys.path:
            sys.path.append(d)
            sys.modules.pop("bcc", None)
            try:
                return importlib.import_module("bcc")
            except ImportError:
                continue
    raise ImportError("bcc not found: install Debian's python3-bpfcc (PyPI's 'bcc' is unrelated)")
