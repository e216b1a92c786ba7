#!/usr/bin/env python3
"""Helpers of jit-profile.sh.

grab PID REGEX OUT.json      copy the code of JIT methods matching REGEX (from /tmp/perf-PID.map) out of /proc/PID/mem
annotate CODE.json PERF.data OUT_DIR
                            per method: samples inside it (perf script IPs), objdump disassembly with the share of
                            the method's samples on each instruction, written to OUT_DIR/<method>.txt
"""
import collections, json, os, re, subprocess, sys


def grab(pid, pattern, out):
    methods = []
    with open(f'/proc/{pid}/mem', 'rb', 0) as mem:
        for line in open(f'/tmp/perf-{pid}.map'):
            addr, size, name = line.rstrip('\n').split(' ', 2)
            if not re.search(pattern, name):
                continue
            a, n = int(addr, 16), int(size, 16)
            mem.seek(a)
            methods.append({'addr': a, 'size': n, 'name': name, 'code': mem.read(n).hex()})
    json.dump(methods, open(out, 'w'))
    print(f'jit-profile: {len(methods)} methods copied from process {pid}')


def annotate(code_json, perf_data, out_dir):
    ips, total = collections.Counter(), 0
    script = subprocess.run(['perf', 'script', '-i', perf_data, '-F', 'ip'], capture_output=True, text=True, check=True)
    for word in script.stdout.split():
        try:
            ips[int(word, 16)] += 1
            total += 1
        except ValueError:
            pass
    for m in json.load(open(code_json)):
        addr, size, name = m['addr'], m['size'], m['name']
        samples = sum(c for ip, c in ips.items() if addr <= ip < addr + size)
        if samples == 0:
            continue
        binary = os.path.join(out_dir, 'code.bin')
        open(binary, 'wb').write(bytes.fromhex(m['code']))
        dis = subprocess.run(['objdump', '-D', '-b', 'binary', '-mi386:x86-64', f'--adjust-vma={addr:#x}', binary],
                             capture_output=True, text=True, check=True).stdout
        path = os.path.join(out_dir, re.sub('[^A-Za-z0-9]+', '_', name.split('(')[0])[-60:] + f'_{addr & 0xffff:x}.txt')
        with open(path, 'w') as f:
            for line in dis.splitlines():
                mm = re.match(r'\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)', line)
                if mm:
                    a = int(mm.group(1), 16)
                    c = ips.get(a, 0)
                    f.write((f'{100 * c / samples:6.2f}%' if c else '       ') + f' {a - addr:5x}  {mm.group(2)}\n')
        os.remove(binary)
        print(f'{100 * samples / total:5.1f}%  {samples:7d} samples  {name[:140]}\n        -> {path}')


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == 'grab':
        grab(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == 'annotate':
        annotate(*sys.argv[2:])
    else:
        sys.exit(__doc__)
