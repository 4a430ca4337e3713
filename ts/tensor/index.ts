export { Tensor, PRECISIONS, storageDType, type Precision, type TensorOptions, type TypedData, type DType, type Device } from './tensor.js';
export * as ops from './ops.js';
export { native, type BackendsInfo, type DeviceInfo } from './native.js';
