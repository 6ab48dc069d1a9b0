"""Memory of process trees, for scripts/bench-kuryr-peer.

    procmem.py once PGID            -> "sumVmHWM sumVmRSS sumPss nprocs" (KiB)
    procmem.py sample OUT PGID...   -> every second, the peaks over time of each
                                       tree's summed Pss and of its process
                                       count, and the CPU seconds its processes
                                       used since the start (user + system, as
                                       last seen; a process living less than a
                                       second may be missed): "peakPss peakProcs
                                       cpuSeconds", one line per PGID in OUT
                                       (rewritten each time), until killed

A tree is every process of the process group PGID plus their descendants
that left it. A PGID of the form cmd:TEXT stands for every process whose
command line contains TEXT (e.g. the kuryr-cni execs, children of containerd).
"""
import os
import sys
import time


TICK = os.sysconf('SC_CLK_TCK')


def procs(cpu=None):
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
        if cpu is not None:  # (pid, start time) -> utime + stime
            cpu[(int(p), fields[19])] = int(fields[11]) + int(fields[12])
    return out


def by_cmd(text, table):
    out = set()
    for p in table:
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                if text.encode() in f.read():
                    out.add(p)
        except OSError:
            pass
    return out


def tree(pgid, table):
    if isinstance(pgid, str):
        return by_cmd(pgid[4:], table)
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
        out = sys.argv[2]
        groups = [g if g.startswith('cmd:') else int(g) for g in sys.argv[3:]]
        peak = {g: 0 for g in groups}
        count = {g: 0 for g in groups}
        first, last = {}, {g: {} for g in groups}
        start = True
        while True:
            ticks = {}
            table = procs(ticks)
            for g in groups:
                pids = tree(g, table)
                _, _, pss = mem(pids)
                peak[g] = max(peak[g], pss)
                count[g] = max(count[g], len(pids))
                for key, t in ticks.items():
                    if key[0] in pids:
                        last[g][key] = t
                        if start:
                            first[key] = t
            start = False
            cpu = {g: sum(t - first.get(k, 0) for k, t in last[g].items()) / TICK
                   for g in groups}
            with open(out + '.tmp', 'w') as f:
                f.write(''.join(f'{peak[g]} {count[g]} {cpu[g]:.1f}\n'
                                for g in groups))
            os.replace(out + '.tmp', out)
            time.sleep(1)
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
