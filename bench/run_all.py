"""`make bench`: every benchmark of the project, each with its peers in the
same run; results in bench/results/*.json.

    python -m bench.run_all [--quick]
"""

import sys

from bench import codecs, datapath


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = ["--quick"] if "--quick" in argv else []
    rc = codecs.main(quick)
    datapath.main(quick)
    return rc


if __name__ == "__main__":
    sys.exit(main())
