# cma-churn: cycle gigantic hugetlb pages (32 MiB and 1 GiB, arm64 4K) in and out of the 1 GiB
# hugetlb CMA area while other work fragments memory: tmpfs files written then half deleted
# (movable, lands in CMA once CMA is the larger free pool), pipes + processes (unmovable kernel
# pages that must steal blocks when memory is tight), compaction.  This is the scenario where
# 6.1 should show pcp/freelist migratetype mismatches and 6.12 should not.
# mtaudit: memory=3072 smp=2 timeout=900 buffer_mb=128 phases=14
# mtaudit: cmdline=hugetlb_cma=1G
# mtaudit: requires=CONFIG_HUGETLBFS,CONFIG_CONTIG_ALLOC,CONFIG_ARCH_HAS_GIGANTIC_PAGE
H1G=1048576 H32M=32768 H2M=2048
mkdir -p /tmp/fill && mount -t tmpfs -o size=2g fill /tmp/fill
ip link set lo up 2>/dev/null

fill() {  # fill PREFIX COUNT MIB_EACH: write files, stop early if MemFree drops below 384 MiB
  local i=0
  while [ $i -lt $2 ]; do
    [ "$(meminfo MemFree)" -lt 393216 ] && { log "fill $1: stopped at $i (MemFree low)"; break; }
    dd if=/dev/zero of=/tmp/fill/$1.$i bs=1M count=$3 2>/dev/null
    i=$((i + 1))
  done
}
holes() {  # holes PREFIX: delete every other file of a fill
  for f in /tmp/fill/$1.*; do
    n=${f##*.}; [ $((n % 2)) -eq 0 ] && rm -f "$f"
  done
}
PIDS=""
unmovable() {  # unmovable N: N processes each holding a full pipe (64 KiB of unmovable pages)
  local i=0            # (stops early below 16 MiB of non-CMA free memory: no OOM with nothing to kill)
  while [ $i -lt $1 ] && [ $(( $(meminfo MemFree) - $(meminfo CmaFree) )) -gt 16384 ]; do
    mkfifo /tmp/pipe.$i.$$ 2>/dev/null
    ( exec 3<>/tmp/pipe.$i.$$; dd if=/dev/zero bs=4096 count=16 >&3 2>/dev/null; exec sleep 600 ) &
    PIDS="$PIDS $!"
    i=$((i + 1))
  done
  log "unmovable: $i processes holding pipes"
  sleep 1
}
release_unmovable() { [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; wait 2>/dev/null; PIDS=""; rm -f /tmp/pipe.*; }
sockets() {  # sockets SECONDS: loopback TCP stream (skbs, socket buffers)
  nc -l -p 5555 > /dev/null 2>&1 &
  L=$!; sleep 0.2
  dd if=/dev/zero bs=64k count=4096 2>/dev/null | nc 127.0.0.1 5555 > /dev/null 2>&1 &
  C=$!; sleep "$1"; kill $C $L 2>/dev/null; wait $C $L 2>/dev/null
  log "sockets: $(cat /proc/net/sockstat | grep TCP)"
}

phase "1 GiB gigantic page (CMA area empty)"
snap 00-start
hp $H1G 1; hp $H1G 0
snap 01-1g

phase "2 MiB hugetlb pool of 384 pages (pins normal memory)"
hp $H2M 384
snap 02-pool2m

phase "round 1: tmpfs fill, pipes + processes, sockets"
fill a 48 8
unmovable 48
sockets 2
phase "round 1: holes, then 4 x 32 MiB gigantic pages (CMA, needs migration)"
holes a
snap 10-r1-frag
hp $H32M 4
snap 11-r1-hp
fill b 8 8
phase "round 1: release pipes, free gigantic pages"
release_unmovable
hp $H32M 0
snap 12-r1-end

phase "round 2: gigantic pool of 28 (fills most of the CMA area), then 3/4-used pageblocks"
hp $H32M 28
# 160 MiB written in allocation order as pairs "keep 3x, drop 1x" with x cycling through
# 4 KiB .. 128 KiB, then the drops deleted: pageblocks stay ~3/4 used, with order-0..5 holes
# that serve small allocations but are too small for a fallback to claim the block
# (6.1: change_ownership=0 steals move free pages to another freelist -> polluted lists).
# printf and '>' are shell builtins: no fork per file.
mkdir -p /tmp/fill/pg
i=0
while [ $i -lt 160 ]; do
  for x in 4096 8192 16384 32768 65536 131072; do
    printf "%$((3 * x))s" > /tmp/fill/pg/k.$i.$x
    printf "%${x}s" > /tmp/fill/pg/d.$i.$x
  done
  i=$((i + 1))
done
rm -f /tmp/fill/pg/d.*
log "3/4-used: $i rounds of keep/drop pairs written, drops deleted"
snap 20-r2-frag
phase "round 2: grow the 2 MiB pool (pins free movable blocks) until ~48 MiB non-CMA memory is free"
pass=0
while [ $pass -lt 8 ]; do
  free_kb=$(( $(meminfo MemFree) - $(meminfo CmaFree) ))   # what unmovable allocations can use
  room=$(( (free_kb - 49152) / 2048 ))           # 2 MiB pages we can take and stay above 48 MiB
  [ $room -lt 4 ] && break
  [ $room -gt 128 ] && room=128
  before=$(cat /sys/kernel/mm/hugepages/hugepages-${H2M}kB/nr_hugepages)
  hp $H2M $((before + room))
  [ "$(cat /sys/kernel/mm/hugepages/hugepages-${H2M}kB/nr_hugepages)" -le "$before" ] && break
  pass=$((pass + 1))
done
snap 21-r2-pool
phase "round 2: unmovable burst with min_free_kbytes 4096 and no watermark boost"
MF=$(cat /proc/sys/vm/min_free_kbytes); WB=$(cat /proc/sys/vm/watermark_boost_factor)
echo 4096 > /proc/sys/vm/min_free_kbytes; echo 0 > /proc/sys/vm/watermark_boost_factor
log "min_free_kbytes $MF -> 4096, watermark_boost_factor $WB -> 0"
unmovable 384
sockets 2
snap 23-r2-unmov
phase "round 2: shrink gigantic pool to 26, release unmovable, 2 MiB pool back to 384"
hp $H32M 26
release_unmovable
hp $H2M 384
echo "$MF" > /proc/sys/vm/min_free_kbytes; echo "$WB" > /proc/sys/vm/watermark_boost_factor
snap 24-r2-end

phase "round 3: drop_caches + compact_memory"
echo 3 > /proc/sys/vm/drop_caches
echo 1 > /proc/sys/vm/compact_memory
snap 30-compacted
phase "round 3: release 2 MiB pool, unmovable again"
hp $H2M 0
unmovable 32
snap 31-r3-pipes
phase "round 3: gigantic pool of 34 (beyond the CMA area -> alloc_contig_pages outside it)"
hp $H32M 34
snap 32-hp34
phase "round 3: free all gigantic pages, release everything"
hp $H32M 0
release_unmovable
rm -rf /tmp/fill/*
umount /tmp/fill
phase "1 GiB gigantic page again (CMA area now churned), then end"
hp $H1G 1; hp $H1G 0
snap 40-end
