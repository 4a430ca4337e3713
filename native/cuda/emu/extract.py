import sys, re
src, start_marker, end_marker, out = sys.argv[1:5]
ns = sys.argv[5] if len(sys.argv) > 5 else ''
s = open(src).read()
i = s.index(start_marker) + len(start_marker)
j = s.index(end_marker)
body = s[i:j]
body = re.sub(r'extern __shared__ (__align__\(\d+\) )?float4 smem4\[\];', 'float4* smem4 = g_dyn_smem;', body)
open(out, 'w').write('#include "emu.h"\n#include "philox.h"\nnamespace gptcuda {\nnamespace ' + ns + ' {\n' + body + '\n}  // namespace\n}  // namespace gptcuda\n')
