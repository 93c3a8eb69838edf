# memory-offline: boot with movablecore= so the top of RAM is ZONE_MOVABLE, put file pages
# there, then offline and online 128 MiB memory blocks.  offline_pages(): pcp drain, isolation
# (MOVABLE -> ISOLATE, no event), migration, test_pages_isolated; online: memmap init as ISOLATE,
# high-order frees, undo isolation -> MOVABLE.
# arm64 refuses to offline boot memory ("Boot memory [...] offlining attempted", see
# prevent_bootmem_remove_notifier) and QEMU 7.2's arm64 virt has no virtio-mem, so on arm64
# this scenario stops with rc 4 after the first attempt; x86_64 guests offline boot memory.
# mtaudit: memory=2048 smp=2 timeout=600 buffer_mb=64 phases=5
# mtaudit: cmdline=movablecore=512M
# mtaudit: requires=CONFIG_MEMORY_HOTPLUG,CONFIG_MEMORY_HOTREMOVE
M=/sys/devices/system/memory
log "block size: $(cat $M/block_size_bytes)"
movable_blocks() {  # online blocks whose zone is Movable, highest first
  for d in $M/memory*; do
    [ "$(cat $d/state 2>/dev/null)" = online ] || continue
    grep -q Movable $d/valid_zones 2>/dev/null && echo "${d##*/memory}"
  done | sort -rn
}
mkdir -p /tmp/fill && mount -t tmpfs -o size=1g fill /tmp/fill

phase "fill 768 MiB of tmpfs so movable blocks hold file pages"
snap 00-start
i=0; while [ $i -lt 96 ]; do dd if=/dev/zero of=/tmp/fill/f.$i bs=1M count=8 2>/dev/null; i=$((i + 1)); done
BLOCKS=$(movable_blocks | head -4)
log "movable blocks: $(movable_blocks | tr '\n' ' ')"
[ -n "$BLOCKS" ] || fail 3 "no online block in ZONE_MOVABLE (movablecore= not honoured?)"
snap 01-filled

phase "offline 4 movable blocks (migrates their pages)"
for b in $BLOCKS; do
  if echo offline > $M/memory$b/state 2>/dev/null; then log "memory$b offline"; else log "memory$b offline failed"; fi
done
snap 10-offline
if dmesg | grep -q 'Boot memory .* offlining attempted'; then
  for b in $BLOCKS; do echo online_movable > $M/memory$b/state 2>/dev/null; done
  fail 4 "this kernel refuses to offline boot memory (arm64): use an x86_64 guest"
fi

phase "online them again as movable"
for b in $BLOCKS; do
  echo online_movable > $M/memory$b/state 2>/dev/null || echo online > $M/memory$b/state 2>/dev/null
  log "memory$b: $(cat $M/memory$b/state)"
done
snap 11-online

phase "delete half the files, offline/online the same blocks once more"
for f in /tmp/fill/f.*; do n=${f##*.}; [ $((n % 2)) -eq 0 ] && rm -f "$f"; done
for b in $BLOCKS; do
  echo offline > $M/memory$b/state 2>/dev/null && log "memory$b offline"
  echo online_movable > $M/memory$b/state 2>/dev/null || echo online > $M/memory$b/state 2>/dev/null
done
snap 20-cycled

phase "clean up"
rm -f /tmp/fill/*
umount /tmp/fill
snap 99-end
