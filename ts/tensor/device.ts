// Device choice: 'auto' takes the GPU when one is usable and says why not otherwise.
import { native } from './native.js';
import type { Device } from './tensor.js';

export type DeviceRequest = Device | 'auto';

export interface DeviceChoice {
  device: Device;
  /** One line for the user: what was chosen and why. */
  reason: string;
}

export function resolveDevice(request: DeviceRequest = 'auto'): DeviceChoice {
  const cuda = native().backends().cuda;
  if (request === 'cpu') return { device: 'cpu', reason: 'cpu (requested)' };
  if (request === 'cuda') {
    if (!cuda.available) throw new Error(`--device cuda: CUDA is not available: ${cuda.reason}`);
    return { device: 'cuda', reason: `cuda: ${native().deviceInfo('cuda').name}` };
  }
  if (request !== 'auto') throw new Error(`unknown device '${request as string}'; use auto, cpu or cuda`);
  if (cuda.available) return { device: 'cuda', reason: `cuda: ${native().deviceInfo('cuda').name} (auto)` };
  return { device: 'cpu', reason: `cpu (auto: ${cuda.reason})` };
}
