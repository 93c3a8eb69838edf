"""Collector errors: each is something the user can act on, printed as one line (exit 2)."""
from __future__ import annotations

from analyzer.errors import MtauditError


class CollectError(MtauditError):
    """Base class for everything `mtaudit collect` refuses or fails on."""


class KernelSpecError(CollectError):
    """The --kernel SPEC cannot be parsed or resolved to a package/image."""


class KernelConfigError(CollectError):
    """The kernel lacks a CONFIG_* option the capture depends on."""


class ToolMissingError(CollectError):
    """A host program (qemu-system-*, apt-get, dpkg-deb, cpio...) is not installed."""


class FetchError(CollectError):
    """apt-get could not update/download a package."""


class GuestError(CollectError):
    """The guest panicked, hung, or did not produce the files it should have."""


class GuestTimeout(GuestError):
    """A phase (boot, scenario, extract) exceeded its hard timeout."""
