"""Copies the kernel section of a .cu file, the lines between `// emu:kernels-begin`
and `// emu:kernels-end`, into a header for the kernel tests (run.sh), inside
namespace gptcuda::<ns> so that several files' sections can be included together.
Usage: extract.py in.cu out.h [ns]"""
import re
import sys

src, out = sys.argv[1], sys.argv[2]
ns = sys.argv[3] if len(sys.argv) > 3 else ''
s = open(src).read()
begin, end = '// emu:kernels-begin', '// emu:kernels-end'
if s.count(begin) != 1 or s.count(end) != 1:
    sys.exit(f'{src}: needs exactly one "{begin}" line and one "{end}" line around its kernels')
body = s[s.index('\n', s.index(begin)) + 1:s.index(end)]
body = re.sub(r'extern __shared__ (__align__\(\d+\) )?float4 smem4\[\];', 'float4* smem4 = g_dyn_smem;', body)
open(out, 'w').write('#include "emu.h"\n#include "philox.h"\nnamespace gptcuda {\nnamespace ' + ns + ' {\n' + body + '\n}  // namespace\n}  // namespace gptcuda\n')
