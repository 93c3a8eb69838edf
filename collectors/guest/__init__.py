"""The guest: what boots under QEMU and what it runs.

initramfs.py builds the initramfs (qemu/init plus trace-cmd and its shared libraries, found by
elfdeps.py from the ELF files themselves); qemu.py picks the machine profile (qemu/machines/),
builds the QEMU command line and runs the guest with timeouts and a clean kill; scenarios.py loads
the workloads (qemu/scenarios/*.sh) with their declared needs. Start at collectors/collect.py,
which wires these together for one run.
"""
