"""Reports of an Analysis: console.py (rich terminal summary), export.py (--json, --parquet;
jsonfast.py writes the indented JSON), plots.py/html.py (figures and the HTML report).

Submodules are imported on use so `mtaudit analyze` never pays for matplotlib.
"""
