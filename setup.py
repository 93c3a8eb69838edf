"""Builds the optional C record walkers (analyzer/readers/_walk.c for trace.dat,
_perfwalk.c for perf.data) and the pcp successor walk
(analyzer/model/_pair.c); metadata lives in pyproject.toml.

Optional by default: without a compiler the install still succeeds and the reader / pcp
pairing fall back to their numpy paths (same results, slower).  MTAUDIT_REQUIRE_CEXT=1 (what
CI sets, see scripts/test) makes a failed build an install error instead.
"""
import os

from setuptools import Extension, setup

REQUIRED = os.environ.get("MTAUDIT_REQUIRE_CEXT") == "1"

try:
    import numpy
except ImportError:  # build-system requires lacks numpy: install the pure-numpy reader only
    if REQUIRED:
        raise
    numpy = None

setup(
    ext_modules=[
        Extension(
            "analyzer.readers._walk",
            ["analyzer/readers/_walk.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=not REQUIRED,
        ),
        Extension(   # perf.data record walk (analyzer/readers/perfdata_walk.py has the Python path)
            "analyzer.readers._perfwalk",
            ["analyzer/readers/_perfwalk.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=not REQUIRED,
        ),
        Extension(   # pcp pairing: next event on the same pfn (analyzer/model/pcp.py has the numpy path)
            "analyzer.model._pair",
            ["analyzer/model/_pair.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=not REQUIRED,
        ),
    ] if numpy is not None else []
)
