"""The regression harness (`mtaudit regress`): the layer above the collector and the analyzer.

regress.py plans interleaved runs of two kernels, collects each through collectors.collect and
analyzes each bundle with the analyzer's CLI (its versioned --json); stats.py compares the two
sides per detector (exact tests, false-alarm control); report.py writes the JSON/JUnit/text
verdicts and html.py the HTML comparison page; cli.py is the sub-command; dist.py runs each
guest (or analysis) as a dask.distributed task under --scheduler. Nothing below imports it.
"""
