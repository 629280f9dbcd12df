"""Where the BPF C sources are: inside the package (agent/_bpf, from bpf/)."""

import pathlib

PROGRAMS = ("connect4", "getpeername4", "sockops", "sk_msg", "connect6", "getpeername6")


def source_dir() -> pathlib.Path:
    """bpf/ as shipped in the package, or the repository's bpf/ in a checkout."""
    try:
        import agent._bpf as shipped  # a namespace package: the data files only

        for p in shipped.__path__:
            if (pathlib.Path(p) / "lib" / "layout.h").exists():
                return pathlib.Path(p)
    except ImportError:
        pass
    repo = pathlib.Path(__file__).resolve().parents[2] / "bpf"
    if (repo / "lib" / "layout.h").exists():
        return repo
    raise FileNotFoundError("nodemesh BPF sources not found (agent/_bpf or bpf/)")
