"""Kernel acquisition: a SPEC (debian:SERIES/ARCH, deb:FILE, path:IMAGE) -> a Kernel on disk.

spec.py parses every SPEC form (including build:, whose building lives in collectors/build/),
defines the Kernel record and checks a kernel's config before anything boots; debian.py talks to
Debian's archive through a private apt configuration and unpacks .deb files without dpkg. Start at
spec.resolve. This room depends only on collectors/build/cache.py and collectors/errors.py.
"""
