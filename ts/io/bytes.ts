// Facts about bytes that several layers need: the host's byte order (typed
// arrays use it, every file format here is little-endian) and how to show a size.
import { endianness } from 'node:os';

export const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/** 512 B, 1.50 KiB, 42.0 MiB, 6.20 GiB; '--' for a non-finite count. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '--';
  const sign = bytes < 0 ? '-' : '';
  let v = Math.abs(bytes);
  if (v < 1024) return `${sign}${Math.round(v)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${sign}${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}
