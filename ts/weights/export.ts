// Export to Hugging Face: model.safetensors + config.json that transformers'
// GPT2LMHeadModel loads (Conv1D [in, out] weights, fused c_attn).
// Models without a Q/K/V bias export exact zero biases (the same function);
// an untied output head is written as lm_head.weight with
// tie_word_embeddings: false, so the exported model computes the same logits.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWriteFile } from '../checkpoint/atomic.js';
import { writeSafetensorsFile, type NamedTensor } from '../checkpoint/safetensors.js';
import type { GPTModel } from '../model/gpt.js';
import { gpt2Tensors, transpose2d } from './gpt2-layout.js';

export interface ExportReport {
  files: string[];
  notes: string[];
}

export async function exportHuggingFace(model: GPTModel, outDir: string): Promise<ExportReport> {
  const c = model.config;
  const notes: string[] = [];
  if (!c.qkvBias) notes.push('the model has no Q/K/V bias; GPT-2 has one, so zero biases were written (same outputs)');
  if (!c.tieWeights) notes.push('the output head is not tied to the token embedding: written as lm_head.weight with tie_word_embeddings=false');
  const flat = model.params.readAll();
  const param = (name: string) => {
    const p = model.params.get(name);
    return flat.subarray(p.offset, p.offset + p.numel);
  };
  const tensors: NamedTensor[] = [];
  for (const t of gpt2Tensors(c)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (!c.qkvBias && t.hf.endsWith('attn.c_attn.bias')) data = new Float32Array(n);
    else {
      data = new Float32Array(n);
      let off = 0;
      for (const name of t.ours) {
        const src = param(name);
        data.set(src, off);
        off += src.length;
      }
      // Ours is [out, in]; GPT-2's Conv1D is [in, out].
      if (t.transpose) data = transpose2d(data, t.shape[1], t.shape[0]);
    }
    tensors.push({ name: `transformer.${t.hf}`, dtype: 'F32', shape: t.shape, data });
  }
  if (!c.tieWeights) tensors.push({ name: 'lm_head.weight', dtype: 'F32', shape: [c.vocabSize, c.embDim], data: param('out_head.weight') });
  mkdirSync(outDir, { recursive: true });
  const weightsPath = join(outDir, 'model.safetensors');
  await writeSafetensorsFile(weightsPath, tensors, { format: 'pt' });
  const config = {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: c.vocabSize,
    n_positions: c.contextLength,
    n_ctx: c.contextLength,
    n_embd: c.embDim,
    n_layer: c.nLayers,
    n_head: c.nHeads,
    n_inner: null,
    activation_function: 'gelu_new',
    resid_pdrop: c.dropRate,
    embd_pdrop: c.dropRate,
    attn_pdrop: c.dropRate,
    layer_norm_epsilon: 1e-5,
    initializer_range: 0.02,
    tie_word_embeddings: c.tieWeights,
    bos_token_id: 50256,
    eos_token_id: 50256,
  };
  const configPath = join(outDir, 'config.json');
  await atomicWriteFile(configPath, JSON.stringify(config, null, 2) + '\n');
  return { files: [weightsPath, configPath], notes };
}
