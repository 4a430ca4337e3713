"""Copies the kernel sections of CUDA sources, the lines between `// emu:kernels-begin`
and `// emu:kernels-end`, into a header for the kernel tests (run.sh), inside
namespace gptcuda::<ns> so that several files' sections can be included together.
IN is one file, or several joined by commas whose sections are copied in that order
(the attention families share the helpers of attention_common.cuh).
Usage: extract.py IN[,IN...] out.h [ns]"""
import re
import sys

srcs, out = sys.argv[1].split(','), sys.argv[2]
ns = sys.argv[3] if len(sys.argv) > 3 else ''
begin, end = '// emu:kernels-begin', '// emu:kernels-end'
bodies = []
for src in srcs:
    s = open(src).read()
    if s.count(begin) != 1 or s.count(end) != 1:
        sys.exit(f'{src}: needs exactly one "{begin}" line and one "{end}" line around its kernels')
    body = s[s.index('\n', s.index(begin)) + 1:s.index(end)]
    bodies.append(re.sub(r'extern __shared__ (__align__\(\d+\) )?float4 smem4\[\];', 'float4* smem4 = g_dyn_smem;', body))
open(out, 'w').write('#include "emu.h"\n#include "philox.h"\nnamespace gptcuda {\nnamespace ' + ns + ' {\n' + '\n'.join(bodies) + '\n}  // namespace\n}  // namespace gptcuda\n')
