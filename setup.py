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


def have_libzstd() -> bool:
    """Whether zstd.h and libzstd are there (Debian: libzstd-dev): the perf.data walker then
    also reads `perf record -z` streams itself; without them it builds without that part and
    the reader decompresses through the zstandard module (same results, slower)."""
    import shutil
    import tempfile

    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "z.c")
        with open(src, "w") as f:
            f.write("#include <zstd.h>\nint main(void) { return ZSTD_isError(0); }\n")
        objs = cc.compile([src], output_dir=tmp)
        cc.link_executable(objs, os.path.join(tmp, "z"), libraries=["zstd"])
        return True
    except Exception:   # any compile or link failure means: build without it
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ZSTD = have_libzstd()

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
            define_macros=[("MTAUDIT_ZSTD", "1")] if ZSTD else [],
            libraries=["zstd"] if ZSTD else [],
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
