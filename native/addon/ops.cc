// JS bindings of the backend ops: argument checks only, then one backend call.
#include "ops.h"

#include <stdexcept>

#include <tuple>

#include "args.h"
#include "backends.h"

// Evaluates the arguments now (pointers, sizes) and runs the backend method
// now, or later on a worker thread when a recording is open (see recording.h).
#define LAUNCH(args, method, ...)                                                      \
  do {                                                                                 \
    auto bound_args = std::make_tuple(__VA_ARGS__);                                    \
    (args).launch([bound_args](Backend* be) {                                          \
      std::apply([be](auto... xs) { be->method(xs...); }, bound_args);                 \
    });                                                                                \
  } while (0)

namespace gptcuda {
namespace {

constexpr int64_t kMaxInt = 2147483647;

int as_int(Args& a, int64_t v, const char* what) {
  if (v > kMaxInt) a.fail(std::string(what) + " is too large for a 32-bit index");
  return static_cast<int>(v);
}

// Size arithmetic, overflow-checked in 64 bits. Shapes are bounded when made
// (kMaxElements), so these only fail if that bound is ever loosened; a
// wrapped size must then be refused, never used to index memory.
int64_t mul(Args& a, int64_t x, int64_t y, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(x, y, &r)) a.fail(std::string(what) + " overflows 64 bits; use smaller shapes");
  return r;
}
int64_t add(Args& a, int64_t x, int64_t y, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(x, y, &r)) a.fail(std::string(what) + " overflows 64 bits; use smaller shapes");
  return r;
}

float* f32(NativeTensor* t) { return t ? static_cast<float*>(t->data()) : nullptr; }
const int32_t* i32(NativeTensor* t) { return static_cast<const int32_t*>(t->data()); }

DropoutRng rng_arg(Args& a, size_t seed_index) {
  return DropoutRng{a.uint53(seed_index, "seed"), a.uint53(seed_index + 1, "stream")};
}

// ---- helpers ------------------------------------------------------------------------
Napi::Value Fill(Args& a) {
  auto x = a.tensor(0, "x");
  float v = static_cast<float>(a.number(1, "value"));
  LAUNCH(a, fill, f32(x), x->numel(), v);
  return Napi::Value();
}

Napi::Value Scale(Args& a) {
  auto x = a.tensor(0, "x");
  float s = static_cast<float>(a.number(1, "factor"));
  LAUNCH(a, scale, f32(x), x->numel(), s);
  return Napi::Value();
}

Napi::Value Add(Args& a) {
  auto out = a.tensor(0, "out"), x = a.tensor(1, "a"), y = a.tensor(2, "b");
  a.expect_shape(x, "a", out->shape());
  a.expect_shape(y, "b", out->shape());
  LAUNCH(a, add, f32(out), f32(x), f32(y), out->numel());
  return Napi::Value();
}

Napi::Value Accumulate(Args& a) {
  auto dst = a.tensor(0, "dst"), src = a.tensor(1, "src");
  a.expect_numel(src, "src", dst->numel());
  LAUNCH(a, accumulate, f32(dst), f32(src), dst->numel());
  return Napi::Value();
}

// copy(dst, src): same dtype and element count, across devices too.
Napi::Value Copy(Args& a) {
  auto dst = a.any_tensor(0, "dst"), src = a.any_tensor(1, "src");
  if (dst->dtype() != src->dtype()) a.fail("dst and src must have the same dtype");
  a.expect_numel(src, "src", dst->numel());
  size_t bytes = static_cast<size_t>(mul(a, int64_t(dst->numel()), int64_t(dtype_size(dst->dtype())), "the byte count"));
  if (bytes == 0) return Napi::Value();
  void* to = dst->data();
  const void* from = src->data();
  if (dst->device() == src->device()) {
    LAUNCH(a, copy, to, from, bytes);
  } else {
    // Across devices: the device side's backend moves the bytes.
    Backend* device_side = src->device() == DeviceKind::CPU ? dst->backend() : src->backend();
    bool up = src->device() == DeviceKind::CPU;
    a.launch_on(device_side, [=](Backend* be) {
      if (up) be->upload(to, from, bytes);
      else be->download(to, from, bytes);
    });
  }
  return Napi::Value();
}

// fillNormal(x, mean, std, seed, stream): seeded normal initialisation.
Napi::Value FillNormal(Args& a) {
  auto x = a.tensor(0, "x");
  float mean = static_cast<float>(a.number(1, "mean")), std = static_cast<float>(a.number(2, "std"));
  DropoutRng rng = rng_arg(a, 3);
  LAUNCH(a, fill_normal, f32(x), x->numel(), mean, std, rng);
  return Napi::Value();
}

// fillUniform(x, lo, hi, seed, stream)
Napi::Value FillUniform(Args& a) {
  auto x = a.tensor(0, "x");
  float lo = static_cast<float>(a.number(1, "lo")), hi = static_cast<float>(a.number(2, "hi"));
  DropoutRng rng = rng_arg(a, 3);
  LAUNCH(a, fill_uniform, f32(x), x->numel(), lo, hi, rng);
  return Napi::Value();
}

// ---- embedding -------------------------------------------------------------------------
Napi::Value EmbeddingForward(Args& a) {
  auto out = a.tensor(0, "out"), ids = a.tensor(1, "ids", DType::I32);
  auto wte = a.tensor(2, "wte"), wpe = a.tensor(3, "wpe");
  int pos0 = a.integer(4, "pos0", 0, kMaxInt);
  a.expect_rank(ids, "ids", 2);
  a.expect_rank(wte, "wte", 2);
  a.expect_rank(wpe, "wpe", 2);
  int64_t B = ids->shape()[0], T = ids->shape()[1], V = wte->shape()[0], C = wte->shape()[1];
  a.expect_shape(out, "out", {B, T, C});
  a.expect_shape(wpe, "wpe", {-1, C});
  if (add(a, pos0, T, "pos0 + T") > wpe->shape()[0])
    a.fail("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
           " exceed the " + std::to_string(wpe->shape()[0]) +
           " rows of wpe (the model's context length); use a shorter sequence");
  LAUNCH(a, embedding_forward, f32(out), i32(ids), f32(wte), f32(wpe), as_int(a, B, "B"),
         as_int(a, T, "T"), as_int(a, C, "C"), as_int(a, V, "V"), pos0);
  return Napi::Value();
}

Napi::Value EmbeddingBackward(Args& a) {
  auto dwte = a.optional_tensor(0, "dwte"), dwpe = a.optional_tensor(1, "dwpe");
  auto dout = a.tensor(2, "dout"), ids = a.tensor(3, "ids", DType::I32);
  int pos0 = a.integer(4, "pos0", 0, kMaxInt);
  a.expect_rank(ids, "ids", 2);
  a.expect_rank(dout, "dout", 3);
  int64_t B = ids->shape()[0], T = ids->shape()[1], C = dout->shape()[2];
  a.expect_shape(dout, "dout", {B, T, C});
  a.expect_shape(dwte, "dwte", {-1, C});
  a.expect_shape(dwpe, "dwpe", {-1, C});
  if (dwpe && add(a, pos0, T, "pos0 + T") > dwpe->shape()[0]) a.fail("positions exceed the rows of dwpe");
  if (dwte) {
    // Validate ids on the host for the CPU: an out-of-range id must not write
    // outside dwte. (The CUDA backend clamps and reports at the next sync.)
    if (dwte->device() == DeviceKind::CPU) {
      const int32_t* p = i32(ids);
      int64_t V = dwte->shape()[0];
      for (int64_t i = 0, n = mul(a, B, T, "B * T"); i < n; ++i)
        if (p[i] < 0 || p[i] >= V)
          a.fail("token id " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                 " is out of range [0, " + std::to_string(V) + ")");
    }
  }
  LAUNCH(a, embedding_backward, f32(dwte), f32(dwpe), f32(dout), i32(ids), as_int(a, B, "B"),
         as_int(a, T, "T"), as_int(a, C, "C"), pos0);
  return Napi::Value();
}

// ---- layernorm ----------------------------------------------------------------------------
Napi::Value LayernormForward(Args& a) {
  auto out = a.tensor(0, "out"), mean = a.tensor(1, "mean"), rstd = a.tensor(2, "rstd");
  auto inp = a.tensor(3, "inp"), w = a.tensor(4, "weight"), bias = a.tensor(5, "bias");
  int64_t C = a.last_dim(inp, "inp"), N = a.rows(inp, "inp");
  a.expect_shape(out, "out", inp->shape());
  a.expect_numel(mean, "mean", N);
  a.expect_numel(rstd, "rstd", N);
  a.expect_shape(w, "weight", {C});
  a.expect_shape(bias, "bias", {C});
  LAUNCH(a, layernorm_forward, f32(out), f32(mean), f32(rstd), f32(inp), f32(w), f32(bias),
                                 as_int(a, N, "N"), as_int(a, C, "C"));
  return Napi::Value();
}

Napi::Value LayernormBackward(Args& a) {
  auto dinp = a.optional_tensor(0, "dinp"), dw = a.optional_tensor(1, "dweight"),
       db = a.optional_tensor(2, "dbias");
  auto dout = a.tensor(3, "dout"), inp = a.tensor(4, "inp"), w = a.tensor(5, "weight");
  auto mean = a.tensor(6, "mean"), rstd = a.tensor(7, "rstd");
  int64_t C = a.last_dim(inp, "inp"), N = a.rows(inp, "inp");
  a.expect_shape(dinp, "dinp", inp->shape());
  a.expect_shape(dout, "dout", inp->shape());
  a.expect_shape(w, "weight", {C});
  a.expect_shape(dw, "dweight", {C});
  a.expect_shape(db, "dbias", {C});
  a.expect_numel(mean, "mean", N);
  a.expect_numel(rstd, "rstd", N);
  LAUNCH(a, layernorm_backward, f32(dinp), f32(dw), f32(db), f32(dout), f32(inp), f32(w),
                                  f32(mean), f32(rstd), as_int(a, N, "N"), as_int(a, C, "C"));
  return Napi::Value();
}

// ---- GEMM / linear ---------------------------------------------------------------------------
// gemm(C, A, B, transA, transB, alpha, beta): C = alpha op(A) op(B) + beta C.
Napi::Value Gemm(Args& a) {
  auto Cm = a.tensor(0, "C"), Am = a.tensor(1, "A"), Bm = a.tensor(2, "B");
  bool ta = a.boolean(3, "transA"), tb = a.boolean(4, "transB");
  float alpha = static_cast<float>(a.number(5, "alpha")), beta = static_cast<float>(a.number(6, "beta"));
  a.expect_rank(Cm, "C", 2);
  a.expect_rank(Am, "A", 2);
  a.expect_rank(Bm, "B", 2);
  int64_t M = Cm->shape()[0], N = Cm->shape()[1];
  int64_t K = ta ? Am->shape()[0] : Am->shape()[1];
  a.expect_shape(Am, "A", ta ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K});
  a.expect_shape(Bm, "B", tb ? std::vector<int64_t>{N, K} : std::vector<int64_t>{K, N});
  LAUNCH(a, gemm, ta, tb, as_int(a, M, "M"), as_int(a, N, "N"), as_int(a, K, "K"), alpha, f32(Am),
                    as_int(a, Am->shape()[1], "lda"), f32(Bm), as_int(a, Bm->shape()[1], "ldb"), beta,
                    f32(Cm), as_int(a, N, "ldc"));
  return Napi::Value();
}

Napi::Value MatmulForward(Args& a) {
  auto out = a.tensor(0, "out"), inp = a.tensor(1, "inp"), w = a.tensor(2, "weight");
  auto bias = a.optional_tensor(3, "bias");
  a.expect_rank(w, "weight", 2);
  int64_t N = w->shape()[0], K = w->shape()[1];
  if (a.last_dim(inp, "inp") != K)
    a.fail("inp's last dimension must equal weight's second dimension (in_features " +
           std::to_string(K) + ")");
  int64_t M = a.rows(inp, "inp");
  std::vector<int64_t> out_shape = inp->shape();
  out_shape.back() = N;
  a.expect_shape(out, "out", out_shape);
  a.expect_shape(bias, "bias", {N});
  LAUNCH(a, matmul_forward, f32(out), f32(inp), f32(w), f32(bias), as_int(a, M, "M"),
                              as_int(a, K, "K"), as_int(a, N, "N"));
  return Napi::Value();
}

Napi::Value MatmulBackward(Args& a) {
  auto dinp = a.optional_tensor(0, "dinp"), dw = a.optional_tensor(1, "dweight"),
       db = a.optional_tensor(2, "dbias");
  auto dout = a.tensor(3, "dout"), inp = a.tensor(4, "inp"), w = a.tensor(5, "weight");
  a.expect_rank(w, "weight", 2);
  int64_t N = w->shape()[0], K = w->shape()[1];
  if (a.last_dim(inp, "inp") != K) a.fail("inp's last dimension must equal weight's in_features");
  int64_t M = a.rows(inp, "inp");
  std::vector<int64_t> out_shape = inp->shape();
  out_shape.back() = N;
  a.expect_shape(dout, "dout", out_shape);
  a.expect_shape(dinp, "dinp", inp->shape());
  a.expect_shape(dw, "dweight", {N, K});
  a.expect_shape(db, "dbias", {N});
  LAUNCH(a, matmul_backward, f32(dinp), f32(dw), f32(db), f32(dout), f32(inp), f32(w),
                               as_int(a, M, "M"), as_int(a, K, "K"), as_int(a, N, "N"));
  return Napi::Value();
}

// ---- GELU, dropout -------------------------------------------------------------------------
Napi::Value GeluForward(Args& a) {
  auto out = a.tensor(0, "out"), inp = a.tensor(1, "inp");
  a.expect_shape(out, "out", inp->shape());
  LAUNCH(a, gelu_forward, f32(out), f32(inp), inp->numel());
  return Napi::Value();
}

Napi::Value GeluBackward(Args& a) {
  auto dinp = a.tensor(0, "dinp"), inp = a.tensor(1, "inp"), dout = a.tensor(2, "dout");
  a.expect_shape(dinp, "dinp", inp->shape());
  a.expect_shape(dout, "dout", inp->shape());
  LAUNCH(a, gelu_backward, f32(dinp), f32(inp), f32(dout), inp->numel());
  return Napi::Value();
}

Napi::Value DropoutForward(Args& a) {
  auto out = a.tensor(0, "out"), inp = a.tensor(1, "inp");
  float p = static_cast<float>(a.number_in(2, "p", 0.0, 0.999999));
  DropoutRng rng = rng_arg(a, 3);
  a.expect_shape(out, "out", inp->shape());
  LAUNCH(a, dropout_forward, f32(out), f32(inp), inp->numel(), p, rng);
  return Napi::Value();
}

Napi::Value DropoutBackward(Args& a) {
  auto dinp = a.tensor(0, "dinp"), dout = a.tensor(1, "dout");
  float p = static_cast<float>(a.number_in(2, "p", 0.0, 0.999999));
  DropoutRng rng = rng_arg(a, 3);
  a.expect_shape(dinp, "dinp", dout->shape());
  LAUNCH(a, dropout_backward, f32(dinp), f32(dout), dout->numel(), p, rng);
  return Napi::Value();
}

// ---- attention ------------------------------------------------------------------------------
struct AttnDims {
  int B, T, C, NH;
};

AttnDims attention_dims(Args& a, NativeTensor* qkv, int nh_index) {
  a.expect_rank(qkv, "qkv", 3);
  int64_t B = qkv->shape()[0], T = qkv->shape()[1], C3 = qkv->shape()[2];
  if (C3 % 3 != 0) a.fail("qkv's last dimension must be 3 * C");
  int64_t C = C3 / 3;
  int NH = a.integer(nh_index, "nHeads", 1, 65536);
  if (C % NH != 0)
    a.fail("the width C = " + std::to_string(C) + " must be divisible by nHeads = " + std::to_string(NH));
  if (C / NH > 256) a.fail("head size C / nHeads must be at most 256");
  return {as_int(a, B, "B"), as_int(a, T, "T"), as_int(a, C, "C"), NH};
}

Napi::Value AttentionForward(Args& a) {
  auto out = a.tensor(0, "out"), lse = a.tensor(1, "lse"), qkv = a.tensor(2, "qkv");
  AttnDims d = attention_dims(a, qkv, 3);
  float p = static_cast<float>(a.number_in(4, "p", 0.0, 0.999999));
  DropoutRng rng = rng_arg(a, 5);
  a.expect_shape(out, "out", {d.B, d.T, d.C});
  a.expect_shape(lse, "lse", {d.B, d.NH, d.T});
  LAUNCH(a, attention_forward, f32(out), f32(lse), f32(qkv), d.B, d.T, d.C, d.NH, p, rng);
  return Napi::Value();
}

Napi::Value AttentionBackward(Args& a) {
  auto dqkv = a.tensor(0, "dqkv"), dout = a.tensor(1, "dout"), qkv = a.tensor(2, "qkv");
  auto out = a.tensor(3, "out"), lse = a.tensor(4, "lse");
  AttnDims d = attention_dims(a, qkv, 5);
  float p = static_cast<float>(a.number_in(6, "p", 0.0, 0.999999));
  DropoutRng rng = rng_arg(a, 7);
  a.expect_shape(dqkv, "dqkv", qkv->shape());
  a.expect_shape(dout, "dout", {d.B, d.T, d.C});
  a.expect_shape(out, "out", {d.B, d.T, d.C});
  a.expect_shape(lse, "lse", {d.B, d.NH, d.T});
  LAUNCH(a, attention_backward, f32(dqkv), f32(dout), f32(qkv), f32(out), f32(lse), d.B, d.T, d.C,
                                  d.NH, p, rng);
  return Napi::Value();
}

// attentionDecode(out, kcache, vcache, qkv, pos0)
Napi::Value AttentionDecode(Args& a) {
  auto out = a.tensor(0, "out"), kc = a.tensor(1, "kcache"), vc = a.tensor(2, "vcache");
  auto qkv = a.tensor(3, "qkv");
  int pos0 = a.integer(4, "pos0", 0, kMaxInt);
  a.expect_rank(kc, "kcache", 4);
  a.expect_rank(qkv, "qkv", 3);
  int64_t B = kc->shape()[0], NH = kc->shape()[1], Tmax = kc->shape()[2], hs = kc->shape()[3];
  int64_t C = mul(a, NH, hs, "nHeads * headSize"), Tn = qkv->shape()[1];
  a.expect_shape(vc, "vcache", kc->shape());
  a.expect_shape(qkv, "qkv", {B, Tn, mul(a, 3, C, "3 * C")});
  a.expect_shape(out, "out", {B, Tn, C});
  if (add(a, pos0, Tn, "pos0 + Tn") > Tmax)
    a.fail("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + Tn - 1) +
           " do not fit in a cache of " + std::to_string(Tmax) + " positions");
  LAUNCH(a, attention_decode, f32(out), f32(kc), f32(vc), f32(qkv), as_int(a, B, "B"),
                                as_int(a, Tn, "Tn"), as_int(a, C, "C"), as_int(a, NH, "NH"),
                                as_int(a, Tmax, "Tmax"), pos0);
  return Napi::Value();
}

// ---- classifier ------------------------------------------------------------------------------
void check_targets(Args& a, NativeTensor* targets, int64_t V, int ignore_index) {
  if (targets->device() != DeviceKind::CPU) return;  // CUDA checks in-kernel
  const int32_t* t = i32(targets);
  for (size_t i = 0; i < targets->numel(); ++i)
    if (t[i] != ignore_index && (t[i] < 0 || t[i] >= V))
      a.fail("target " + std::to_string(t[i]) + " at row " + std::to_string(i) +
             " is out of range [0, " + std::to_string(V) + ") and is not the ignore index " +
             std::to_string(ignore_index));
}

Napi::Value CrossentropyForward(Args& a) {
  auto losses = a.tensor(0, "losses"), logits = a.tensor(1, "logits");
  auto targets = a.tensor(2, "targets", DType::I32);
  int ignore = a.integer(3, "ignoreIndex", -kMaxInt, kMaxInt);
  int64_t V = a.last_dim(logits, "logits"), N = a.rows(logits, "logits");
  a.expect_numel(targets, "targets", N);
  a.expect_numel(losses, "losses", N);
  check_targets(a, targets, V, ignore);
  LAUNCH(a, crossentropy_forward, f32(losses), f32(logits), i32(targets), as_int(a, N, "N"),
                                    as_int(a, V, "V"), ignore);
  return Napi::Value();
}

Napi::Value CrossentropyForwardBackward(Args& a) {
  auto losses = a.tensor(0, "losses"), dlogits = a.tensor(1, "dlogits"), logits = a.tensor(2, "logits");
  auto targets = a.tensor(3, "targets", DType::I32);
  float dloss = static_cast<float>(a.number(4, "dloss"));
  int ignore = a.integer(5, "ignoreIndex", -kMaxInt, kMaxInt);
  int64_t V = a.last_dim(logits, "logits"), N = a.rows(logits, "logits");
  a.expect_shape(dlogits, "dlogits", logits->shape());
  a.expect_numel(targets, "targets", N);
  a.expect_numel(losses, "losses", N);
  check_targets(a, targets, V, ignore);
  LAUNCH(a, crossentropy_forward_backward, f32(losses), f32(dlogits), f32(logits), i32(targets),
                                             as_int(a, N, "N"), as_int(a, V, "V"), dloss, ignore);
  return Napi::Value();
}

// ---- optimizer --------------------------------------------------------------------------------
// adamw(params, grads, m, v, lr, beta1, beta2, eps, weightDecay, t)
Napi::Value Adamw(Args& a) {
  auto p = a.tensor(0, "params"), g = a.tensor(1, "grads"), m = a.tensor(2, "m"), v = a.tensor(3, "v");
  float lr = static_cast<float>(a.number_in(4, "lr", 0, 1e6));
  float b1 = static_cast<float>(a.number_in(5, "beta1", 0, 0.999999999));
  float b2 = static_cast<float>(a.number_in(6, "beta2", 0, 0.999999999));
  float eps = static_cast<float>(a.number_in(7, "eps", 0, 1));
  float wd = static_cast<float>(a.number_in(8, "weightDecay", 0, 1e6));
  int t = a.integer(9, "step", 1, kMaxInt);
  a.expect_numel(g, "grads", p->numel());
  a.expect_numel(m, "m", p->numel());
  a.expect_numel(v, "v", p->numel());
  LAUNCH(a, adamw, f32(p), f32(g), f32(m), f32(v), p->numel(), lr, b1, b2, eps, wd, t);
  return Napi::Value();
}

Napi::Value SumSquares(Args& a) {
  auto out = a.tensor(0, "out"), x = a.tensor(1, "x");
  a.expect_numel(out, "out", 1);
  LAUNCH(a, sum_squares, f32(out), f32(x), x->numel());
  return Napi::Value();
}

Napi::Value ClipByNorm(Args& a) {
  auto x = a.tensor(0, "x"), norm_sq = a.tensor(1, "normSq");
  float max_norm = static_cast<float>(a.number_in(2, "maxNorm", 0, 1e30));
  a.expect_numel(norm_sq, "normSq", 1);
  LAUNCH(a, clip_by_norm, f32(x), x->numel(), f32(norm_sq), max_norm);
  return Napi::Value();
}

// ---- registration -------------------------------------------------------------------------------
using OpFn = Napi::Value (*)(Args&);

struct OpEntry {
  const char* name;
  OpFn fn;
};

Napi::Value call_op(const Napi::CallbackInfo& info) {
  auto* entry = static_cast<const OpEntry*>(info.Data());
  Args args(info, entry->name);
  try {
    Napi::Value r = entry->fn(args);
    return r.IsEmpty() ? info.Env().Undefined() : r;
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string(entry->name) + ": " + e.what());
  }
}

const OpEntry kOps[] = {
    {"fill", Fill},
    {"scale", Scale},
    {"add", Add},
    {"accumulate", Accumulate},
    {"copy", Copy},
    {"fillNormal", FillNormal},
    {"fillUniform", FillUniform},
    {"embeddingForward", EmbeddingForward},
    {"embeddingBackward", EmbeddingBackward},
    {"layernormForward", LayernormForward},
    {"layernormBackward", LayernormBackward},
    {"gemm", Gemm},
    {"matmulForward", MatmulForward},
    {"matmulBackward", MatmulBackward},
    {"geluForward", GeluForward},
    {"geluBackward", GeluBackward},
    {"dropoutForward", DropoutForward},
    {"dropoutBackward", DropoutBackward},
    {"attentionForward", AttentionForward},
    {"attentionBackward", AttentionBackward},
    {"attentionDecode", AttentionDecode},
    {"crossentropyForward", CrossentropyForward},
    {"crossentropyForwardBackward", CrossentropyForwardBackward},
    {"adamw", Adamw},
    {"sumSquares", SumSquares},
    {"clipByNorm", ClipByNorm},
};

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  for (const OpEntry& e : kOps)
    ops.Set(e.name, Napi::Function::New(env, call_op, e.name, const_cast<OpEntry*>(&e)));
  exports.Set("ops", ops);
}

}  // namespace gptcuda
