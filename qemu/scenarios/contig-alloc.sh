# contig-alloc: gigantic hugetlb pages WITHOUT hugetlb_cma, so they come from
# alloc_contig_pages() -> alloc_contig_range(MIGRATE_MOVABLE): every attempted range is
# isolated (blocks -> ISOLATE) and restored as MOVABLE, also blocks that were UNMOVABLE or
# RECLAIMABLE but free.  No cma_* events from hugetlb here (the 64 MiB DMA area may still appear).
# mtaudit: memory=2048 smp=2 timeout=600 buffer_mb=64 phases=7
# mtaudit: requires=CONFIG_HUGETLBFS,CONFIG_CONTIG_ALLOC,CONFIG_ARCH_HAS_GIGANTIC_PAGE
H1G=1048576 H32M=32768
mkdir -p /tmp/fill && mount -t tmpfs -o size=1g fill /tmp/fill
PIDS=""; NP=0
unmovable() {  # unmovable N: N processes each holding a full pipe (64 KiB of unmovable pages)
  local i=0
  while [ $i -lt $1 ]; do
    NP=$((NP + 1)); mkfifo /tmp/pipe.$NP
    ( exec 3<>/tmp/pipe.$NP; dd if=/dev/zero bs=4096 count=16 >&3 2>/dev/null; exec sleep 600 ) &
    PIDS="$PIDS $!"; i=$((i + 1))
  done
  sleep 1
}
release_unmovable() { [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; wait 2>/dev/null; PIDS=""; rm -f /tmp/pipe.*; }

phase "4 x 32 MiB gigantic pages on a fresh system"
snap 00-start
hp $H32M 4
snap 01-hp4
hp $H32M 0

phase "fragment: tmpfs fill 512 MiB interleaved with pipes + processes"
i=0
while [ $i -lt 64 ]; do
  dd if=/dev/zero of=/tmp/fill/f.$i bs=1M count=8 2>/dev/null
  [ $((i % 8)) -eq 0 ] && unmovable 8
  i=$((i + 1))
done
snap 10-filled

phase "holes: delete every other file"
for f in /tmp/fill/f.*; do n=${f##*.}; [ $((n % 2)) -eq 0 ] && rm -f "$f"; done
snap 11-holes

phase "16 x 32 MiB gigantic pages (migration out of isolated ranges)"
hp $H32M 16
snap 12-hp16

phase "one 1 GiB gigantic page (PUD-aligned range; may fail)"
hp $H1G 1
snap 13-1g
hp $H1G 0

phase "compaction, then gigantic pool 24"
echo 1 > /proc/sys/vm/compact_memory
hp $H32M 24
snap 20-hp24

phase "release everything"
hp $H32M 0
release_unmovable
rm -f /tmp/fill/*
umount /tmp/fill
snap 99-end
