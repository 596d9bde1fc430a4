#!/usr/bin/env python3
"""Top contributors to the static binary's size, by crate (a `cargo bloat`-style view
from `nm` of the unstripped `bloat` profile build)."""
import collections, re, subprocess, sys

binary = sys.argv[1]
out = subprocess.run(["nm", "--size-sort", "-S", "-C", binary], capture_output=True, text=True, check=True).stdout
by_crate = collections.Counter()
total = 0
for line in out.splitlines():
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2].lower() not in "tr":
        continue
    size = int(parts[1], 16)
    name = parts[3]
    total += size
    name = re.sub(r"^(<|\[|&|\*|dyn |impl )+", "", name)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    by_crate[m.group(1) if m else "[C/other]"] += size
print(f"{'crate':<32} {'KiB':>8} {'share':>6}")
for crate, size in by_crate.most_common(25):
    print(f"{crate:<32} {size/1024:8.1f} {100*size/total:5.1f}%")
print(f"{'(text+rodata symbols)':<32} {total/1024:8.1f}")
