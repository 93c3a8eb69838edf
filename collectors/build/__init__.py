"""Kernel builds from source: `build:SRC[,patch=...][,config=...]` -> a Kernel, cached by content.

source.py identifies and unpacks a source (tree, tarball, debian-source:SERIES) and applies
patches into a shared work tree; kconfig.py merges the per-arch base config (qemu/kconfig/) with
fragments and checks the result; build.py runs make and stores the image in the cache; cache.py is
the content-addressed, lock-guarded cache under ~/.cache/mtaudit that the other rooms share too.
Start at build.build_kernel. This room sits above collectors/kernels/ (it produces a kernels Kernel).
"""
