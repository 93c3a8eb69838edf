# cma-race: provoke the isolate-vs-pcp race of the 2012 CMA review (CMA v19, "mm: page_alloc:
# update migrate type of pages on pcp when isolating"; closed for good in v3.18 by 51bb1a4093cc
# "mm/page_alloc: add freepage on isolate pageblock to correct buddy list").
#
# How: a CMA area of 640 MiB out of 1536 MiB, so that 6.1 serves movable page-cache allocations
# from CMA (it does once free CMA exceeds half of the zone's free memory); page-cache churn on
# both CPUs so the pcp lists hold pages of CMA pageblocks; and cma_alloc()/cma_release() in a loop
# through CMA_DEBUGFS.  Every cma_alloc() isolates its CMA blocks (-> MIGRATE_ISOLATE) and then
# drains all pcp lists.  A kernel that re-reads the block type while a block of the zone is
# isolated frees those pages to the Isolate freelist; one that trusts the cached pcp type puts
# them back on the CMA freelist, where they can be allocated and are counted as free CMA memory.
# mtaudit: memory=1536 smp=2 timeout=600 buffer_mb=48 phases=5 cmdline=cma=640M
# mtaudit: requires=CONFIG_CMA_DEBUGFS,CONFIG_DEBUG_FS
ROUNDS=${ROUNDS:-12}
grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug
D=$(ls -d /sys/kernel/debug/cma/* 2>/dev/null | head -n 1)
[ -n "$D" ] && [ -w "$D/alloc" ] || fail 3 "no CMA_DEBUGFS area under /sys/kernel/debug/cma"
log "cma area $(basename "$D"): base_pfn $(cat $D/base_pfn) count $(cat $D/count)"
mkdir -p /tmp/pc && mount -t tmpfs -o size=1400m pc /tmp/pc

phase "fill page cache until free CMA exceeds half of free memory"
snap 00-start
i=0
while [ $i -lt 120 ]; do
  free=$(meminfo MemFree); cma=$(meminfo CmaFree)
  [ $((cma * 2)) -gt $free ] && [ $i -ge 8 ] && break
  [ "$free" -lt 200000 ] && break
  dd if=/dev/zero of=/tmp/pc/base.$i bs=1M count=8 2>/dev/null
  i=$((i + 1))
done
log "filled $i x 8 MiB: MemFree $(meminfo MemFree) kB, CmaFree $(meminfo CmaFree) kB"
snap 10-filled

phase "churn: two writers recycle page cache so pcp lists hold CMA pages"
churn() {  # churn ID: rewrite and delete small files forever (killed by the caller)
  n=0
  while :; do
    dd if=/dev/zero of=/tmp/pc/churn.$1.$((n % 4)) bs=64k count=32 2>/dev/null
    rm -f /tmp/pc/churn.$1.$(((n + 2) % 4))
    n=$((n + 1))
  done
}
churn a & CA=$!
churn b & CB=$!
sleep 1

phase "cma_alloc/cma_release under churn"
r=0; ok=0
while [ $r -lt $ROUNDS ]; do
  for n in 1024 4096 2048; do
    if echo $n > $D/alloc 2>/dev/null; then ok=$((ok + 1)); echo $n > $D/free 2>/dev/null; fi
  done
  r=$((r + 1))
done
log "cma_alloc succeeded $ok of $((ROUNDS * 3)) times"
snap 20-cycled

phase "stop churn, release page cache"
kill $CA $CB 2>/dev/null; wait 2>/dev/null
rm -f /tmp/pc/*
sync; echo 3 > /proc/sys/vm/drop_caches
sleep 1
snap 30-released

phase "end"
snap 99-end
