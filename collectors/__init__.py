"""The collector: from a kernel SPEC and a scenario to a trace bundle on disk.

Rooms, lowest first (a room imports only the rooms before it, never one after):
  kernels/   kernel acquisition: SPEC parsing, Debian packages through a private apt, local .deb
             files and `path:` images, the config check (kernels/spec.py, kernels/debian.py).
  build/     kernels built here from source: source trees and patches (build/source.py), config
             fragments (build/kconfig.py), the build itself (build/build.py) and the
             content-addressed cache every room shares (build/cache.py).
  guest/     what runs in QEMU: the initramfs and its ELF closure, the QEMU runner, the scenarios.
  collect.py one run: resolve the kernel (dispatching `build:` specs to build/), boot, capture,
             write the bundle through analyzer/bundle.py (the one definition of the format).
  commands.py the `mtaudit collect` sub-command.
The regression harness, which drives both the collector and the analyzer, is the layer above:
the top-level `harness` package.
"""
