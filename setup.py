"""Builds the optional C record walker (analyzer/readers/_walk.c) and pcp successor walk
(analyzer/model/_pair.c); metadata lives in pyproject.toml.

`optional=True`: without a compiler the install still succeeds and the reader / pcp pairing
fall back to their numpy paths (same results, slower).
"""
from setuptools import Extension, setup

try:
    import numpy
except ImportError:  # build-system requires lacks numpy: install the pure-numpy reader only
    numpy = None

setup(
    ext_modules=[
        Extension(
            "analyzer.readers._walk",
            ["analyzer/readers/_walk.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(   # pcp pairing: next event on the same pfn (analyzer/model/pcp.py has the numpy path)
            "analyzer.model._pair",
            ["analyzer/model/_pair.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ] if numpy is not None else []
)
