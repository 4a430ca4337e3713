// The op table: one list of cases per native op (the names of native().ops),
// each with seeded inputs and an independent float64 reference, checked on
// whatever device the driver (test/op-table.test.ts) hands it. Tolerances are
// looked up per (tolerance class, device, precision) and per storage dtype, so
// the bfloat16 axis (context.ts) runs the same cases, not new ones.
import { ATTENTION } from './attention.js';
import { type OpEntry } from './context.js';
import { convert } from './convert.js';
import { CROSSENTROPY } from './crossentropy.js';
import { COPIES, ELEMENTWISE } from './elementwise.js';
import { EMBEDDING } from './embedding.js';
import { geluBackward, geluForward } from './gelu.js';
import { LAYERNORM } from './layernorm.js';
import { MATMUL } from './matmul.js';
import { OPTIMIZER } from './optimizer.js';
import { dropoutBackward, dropoutForward, dropoutUnaligned, fillNormal, fillUniform } from './random.js';

export { OpContext, type OpCase, type OpEntry, type Precision, type StorageDType, type TolClass } from './context.js';

export const OP_TABLE: OpEntry[] = [...ELEMENTWISE, ...COPIES, convert, fillNormal, fillUniform, dropoutForward, dropoutBackward, dropoutUnaligned, geluForward, geluBackward,
  ...EMBEDDING, ...LAYERNORM, ...MATMUL, ...ATTENTION, ...CROSSENTROPY, ...OPTIMIZER];

/** Native ops without a case, and table entries whose names are not native ops. */
export function coverageGaps(nativeOps: string[], table: OpEntry[]) {
  const covered = new Set(table.filter((e) => e.cases.length > 0).map((e) => e.op));
  const known = new Set(nativeOps);
  return {
    missing: nativeOps.filter((op) => !covered.has(op)),
    unknown: [...covered].filter((op) => !known.has(op)),
  };
}
