# cma-pinned: CMA allocations that fail for a known reason on a stock kernel.
#
# tmpfs pages (movable, allocated from the hugetlb CMA area because free CMA is more than half of
# free memory) get extra references that migration cannot drop: `cat FILE > FIFO` with a reader
# that never reads makes busybox cat sendfile() the file into the pipe, and the pipe buffers keep
# references on the file's first 16 page-cache pages (splice by reference).  alloc_contig_range()
# cannot migrate those pages, test_pages_isolated() reports them busy, cma_alloc() retries the next
# range (cma_alloc_busy_retry) and, once every free range holds a pinned page, fails with -EBUSY.
# A 1 GiB request while 32 MiB gigantic pages hold parts of the area fails earlier, with
# -ENOMEM: no free aligned range.  3072 MiB of RAM: the 1 GiB area needs a free 1 GiB-aligned
# range below the early top-down memblock allocations (2048 MiB is too small on QEMU virt); a
# 2 MiB hugetlb pool first takes non-CMA memory, so free CMA is more than half of free memory and
# the tmpfs pages come from CMA.
# mtaudit: memory=3072 smp=2 timeout=900 buffer_mb=48 phases=6
# mtaudit: cmdline=hugetlb_cma=1G
# mtaudit: requires=CONFIG_HUGETLBFS,CONFIG_CONTIG_ALLOC,CONFIG_ARCH_HAS_GIGANTIC_PAGE,CONFIG_CMA
H1G=1048576 H32M=32768 H2M=2048
FILES=${FILES:-24}
mkdir -p /tmp/pin && mount -t tmpfs -o size=512m pin /tmp/pin

phase "tmpfs files while free CMA is more than half of free memory (pages land in CMA)"
snap 00-start
[ "$(meminfo CmaTotal)" -ge 1048576 ] || fail 3 "hugetlb_cma=1G was not reserved (CmaTotal $(meminfo CmaTotal) kB)"
hp $H2M 640
i=0
while [ $i -lt $FILES ]; do
  dd if=/dev/zero of=/tmp/pin/f.$i bs=1M count=2 2>/dev/null
  i=$((i + 1))
done
log "wrote $FILES x 2 MiB: MemFree $(meminfo MemFree) kB, CmaFree $(meminfo CmaFree) kB"
snap 10-files

phase "pin: cat each file into a FIFO nobody reads (pipe buffers hold page references)"
PIDS=""
i=0
while [ $i -lt $FILES ]; do
  mkfifo /tmp/fifo.$i
  ( exec 3<>/tmp/fifo.$i; exec sleep 900 ) &
  PIDS="$PIDS $!"
  sleep 0.05
  cat /tmp/pin/f.$i > /tmp/fifo.$i 2>/dev/null &
  PIDS="$PIDS $!"
  i=$((i + 1))
done
sleep 2
log "pinned: $FILES cat processes blocked on full pipes"

phase "32 MiB gigantic pages from the CMA area (ranges holding pinned pages are busy)"
hp $H32M 32
snap 20-hp32m

phase "1 GiB gigantic page while 32 MiB pages hold the area (no free aligned range: -ENOMEM)"
hp $H1G 1
hp $H1G 0

phase "1 GiB gigantic page after the 32 MiB pool is released (pinned pages: -EBUSY)"
hp $H32M 0
hp $H1G 1
hp $H1G 0
snap 30-1g

phase "release pins, end"
kill $PIDS 2>/dev/null; wait 2>/dev/null
hp $H2M 0
rm -f /tmp/fifo.* /tmp/pin/*
umount /tmp/pin
snap 99-end
