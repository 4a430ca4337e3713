"""Rewrites a CUDA source file as C++ for the emulated backend (backend.sh):
kernel launches `k<<<grid, block, smem, stream>>>(args)` become
`::emu::launch("k", ::emu::cfg(grid, block, smem, stream), k, args)`, and
`extern __shared__ T name[];` becomes a pointer to the emulator's dynamic
shared memory. Everything else compiles as it is against simt.h and shim/.
Usage: translate.py in.cu out.cc"""
import re
import sys

src, out = sys.argv[1], sys.argv[2]
s = open(src).read()

launch = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)

def repl(m):
    name, config = m.group(1), m.group(2)
    rest = s[m.end():]
    sep = '' if rest.lstrip().startswith(')') else ', '
    return f'::emu::launch("{name}", ::emu::cfg({config}), {name}{sep}'

n_launch = len(launch.findall(s))
s = launch.sub(repl, s)
s = re.sub(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s*)?(\w+)\s+(\w+)\s*\[\s*\]\s*;',
           r'\1* \2 = reinterpret_cast<\1*>(::emu::g_dyn_smem);', s)
if '<<<' in s:
    sys.exit(f'{src}: a kernel launch translate.py did not understand')
open(out, 'w').write(f'// Generated from {src} by translate.py ({n_launch} launches rewritten)\n#line 1 "{src}"\n' + s)
