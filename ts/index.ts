// gptcuda: pretrain, evaluate and sample GPT-2-style models from Node.js.
export { GPTModel, KVCache, type ForwardOptions, type ModelInit } from './model/gpt.js';
export { BOOK_CONFIG, PRESETS, resolveConfig, countParameters, type GPTConfig } from './model/config.js';
export { generate, stream, streamBatch, type GenerateOptions, type StreamedToken } from './generate/generate.js';
export { Trainer, type TrainOptions, type TrainEvent, type TrainState, type TrainSummary } from './train/trainer.js';
export { AdamW, BOOK_ADAMW, type AdamWConfig } from './train/optimizer.js';
export { batchLoss, loaderLoss, perplexity } from './train/loss.js';
export { createLoaders, loadText, splitText, DataLoader, TokenWindows, TokenFile, pretokenize } from './data/dataset.js';
export { textToTokenIds, tokenIdsToText, getTokenizer, EOT_ID, VOCAB_SIZE } from './data/tokenizer.js';
export { saveCheckpoint, loadCheckpoint } from './checkpoint/checkpoint.js';
export { loadModel, detectWeights } from './weights/load.js';
export { exportHuggingFace } from './weights/export.js';
export { downloadOpenAIModel } from './weights/openai-download.js';
export { openTfCheckpoint } from './weights/tf-checkpoint.js';
export { Tensor, ops, native } from './tensor/index.js';
export { resolveDevice, type DeviceRequest } from './tensor/device.js';
export { Rng } from './tensor/rng.js';
