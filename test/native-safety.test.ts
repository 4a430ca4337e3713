// Memory safety of the addon's JS surface: a disposed tensor refuses every
// member instead of touching freed memory, size arithmetic refuses offsets
// and shapes that would wrap, and a recording keeps its tensors' memory
// alive until it can no longer run.
import { describe, expect, it } from 'vitest';

import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';

const inUse = () => native().deviceInfo('cpu').memoryInUse;

function disposedTensor(): Tensor {
  const t = Tensor.zeros([2, 3]);
  t.dispose();
  return t;
}

describe('disposed tensors', () => {
  it('every getter and method throws a one-line Error naming the problem', () => {
    const members: Record<string, (t: Tensor) => unknown> = {
      shape: (t) => t.shape,
      dtype: (t) => t.dtype,
      device: (t) => t.device,
      numel: (t) => t.numel,
      offset: (t) => t.handle.offset,
      view: (t) => t.view(0, [1]),
      toFloat32Array: (t) => t.toFloat32Array(),
      item: (t) => t.item(),
      write: (t) => t.write(new Float32Array(6)),
    };
    for (const [name, call] of Object.entries(members)) {
      let error: unknown;
      try {
        call(disposedTensor());
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(Error);
      expect((error as Error).message, name).toMatch(/was disposed; it can no longer be used/);
      expect((error as Error).message, name).not.toContain('\n');
    }
  });

  it('a view of a disposed root refuses them too; disposed, dispose() and toString() still work', () => {
    const root = Tensor.zeros([4]);
    const v = root.view(1, [2]);
    root.dispose();
    expect(() => v.device).toThrow(/device: tensor float32\[2\] was disposed/);
    expect(() => v.shape).toThrow(/was disposed/);
    expect(v.disposed).toBe(true);
    expect(String(v)).toBe('Tensor(disposed)');
    v.dispose();
    root.dispose(); // a second dispose is harmless
    expect(String(Tensor.zeros([1, 2]))).toBe('Tensor(float32[1, 2] on cpu)');
  });
});

describe('size arithmetic', () => {
  it('a view at a huge or fractional offset is refused', () => {
    const t = Tensor.zeros([8]);
    try {
      for (const off of [2 ** 64 - 1, 2 ** 63, 2 ** 53, 2 ** 53 - 1, 9, 0.5, -1, NaN, Infinity]) {
        expect(() => t.view(off, [1]), String(off)).toThrow(/view: /);
      }
      const near = t.view(7, [1]);
      expect(() => near.view(1, [1])).toThrow(/does not fit/);
      expect(t.view(8, [0]).shape).toEqual([0]);
    } finally {
      t.dispose();
    }
  });

  it('a shape whose product wraps 64 bits is refused, by views and by createTensor', () => {
    const t = Tensor.zeros([4]);
    try {
      // 2^32 * 2^32 wraps to 0 in 64 bits, (2^32+1)^2 to 2^33+1: both used to fit "in" a 4-element tensor.
      for (const shape of [[2 ** 32, 2 ** 32], [2 ** 32 + 1, 2 ** 32 + 1], [2 ** 40, 2 ** 40, 0], [2 ** 64]]) {
        expect(() => t.view(0, shape), JSON.stringify(shape)).toThrow(/view: /);
        expect(() => Tensor.zeros(shape), JSON.stringify(shape)).toThrow(/createTensor: /);
      }
      expect(() => Tensor.zeros([2 ** 40, 2 ** 30], { dtype: 'int32' })).toThrow(/createTensor: .*too large/);
    } finally {
      t.dispose();
    }
  });
});

describe('recordings pin their tensors', () => {
  it('dispose between endRecording and runRecording frees at once, and the run is refused', () => {
    const addon = native();
    const before = inUse();
    const x = Tensor.zeros([1 << 16]);
    addon.beginRecording();
    try {
      ops.fill(x, 3);
    } finally {
      var rec = addon.endRecording();
    }
    x.dispose();
    expect(x.disposed).toBe(true);
    expect(inUse()).toBe(before); // not waiting for the recording to be collected
    expect(() => addon.runRecording(rec)).toThrow(/runRecording: a tensor this recording uses was disposed/);
    expect(() => addon.runRecording(rec)).toThrow(/was disposed/);
  });

  it('dispose while the recording runs on the worker frees only once it finished', async () => {
    const addon = native();
    const before = inUse();
    const a = Tensor.zeros([1 << 20]);
    const b = Tensor.zeros([1 << 20]);
    addon.beginRecording();
    try {
      for (let i = 0; i < 20; i++) ops.geluForward(b, a);
      ops.fill(b, 2);
    } finally {
      var rec = addon.endRecording();
    }
    const run = addon.runRecording(rec);
    a.dispose();
    b.dispose();
    expect(inUse() - before).toBeGreaterThanOrEqual(8 << 20);
    await run;
    expect(inUse()).toBe(before);
  });

  it('a recording whose tensors stay live can run again', async () => {
    const addon = native();
    const x = Tensor.zeros([4]);
    addon.beginRecording();
    try {
      ops.scale(x, 2);
    } finally {
      var rec = addon.endRecording();
    }
    x.write(Float32Array.from([1, 2, 3, 4]));
    await addon.runRecording(rec);
    await addon.runRecording(rec);
    expect([...x.toFloat32Array()]).toEqual([4, 8, 12, 16]);
    x.dispose();
  });
});
