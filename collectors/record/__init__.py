"""`mtaudit record`: capture the page allocator on the running kernel into a bundle.

Two backends: `tracefs` (a private ftrace instance read page by page from
per_cpu/cpu*/trace_pipe_raw, written as trace.dat) and `perf` (`perf record`, perf.data).
Both write the bundle `mtaudit collect` writes (snapshots, manifest, lost events), so
`mtaudit analyze DIR` reads either without assumptions.
"""
