"""Memory of process trees, for scripts/bench-kuryr-peer.

    procmem.py once PGID            -> "sumVmHWM sumVmRSS sumPss nprocs" (KiB)
    procmem.py sample OUT PGID...   -> every second, the peak over time of each
                                       tree's summed VmRSS, one line per PGID in
                                       OUT (rewritten each time), until killed

A tree is every process of the process group PGID plus their descendants
that left it.
"""
import os
import sys
import time


def procs():
    out = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open(f'/proc/{p}/stat') as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        out[int(p)] = (int(fields[1]), int(fields[2]))  # ppid, pgid
    return out


def tree(pgid, table):
    members = {p for p, (_, g) in table.items() if g == pgid}
    while True:
        new = {p for p, (pp, _) in table.items() if pp in members} - members
        if not new:
            return members
        members |= new


def mem(pids, pss=True):
    hwm = rss = tot_pss = 0
    for p in pids:
        try:
            with open(f'/proc/{p}/status') as f:
                for line in f:
                    if line.startswith('VmHWM:'):
                        hwm += int(line.split()[1])
                    elif line.startswith('VmRSS:'):
                        rss += int(line.split()[1])
            if pss:
                with open(f'/proc/{p}/smaps_rollup') as f:
                    for line in f:
                        if line.startswith('Pss:'):
                            tot_pss += int(line.split()[1])
        except OSError:
            pass
    return hwm, rss, tot_pss


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == 'once':
        pids = tree(int(sys.argv[2]), procs())
        print(*mem(pids), len(pids))
    elif len(sys.argv) >= 4 and sys.argv[1] == 'sample':
        out, groups = sys.argv[2], [int(g) for g in sys.argv[3:]]
        peak = {g: 0 for g in groups}
        while True:
            table = procs()
            for g in groups:
                _, rss, _ = mem(tree(g, table), pss=False)
                peak[g] = max(peak[g], rss)
            with open(out + '.tmp', 'w') as f:
                f.write(''.join(f'{peak[g]}\n' for g in groups))
            os.replace(out + '.tmp', out)
            time.sleep(1)
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
