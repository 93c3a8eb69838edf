"""Test helpers shared by the layers' tests: the synthetic model story, the text-vs-binary
comparisons, the trace-cmd oracle, the test-only trace.dat writer and its variants, the fuzz
worker.  Importable as `support` (pytest's pythonpath = tests)."""
