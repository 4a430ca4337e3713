// JS bindings of the backend ops: argument checks only, then one backend call.
#include "ops.h"

#include <stdexcept>

#include <tuple>

#include "args.h"
#include "backends.h"
#include "js_errors.h"

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

// Argument i, a tensor of ref's dtype and shape (elementwise ops).
NativeTensor* tensor_like(Args& a, size_t i, const char* name, NativeTensor* ref) {
  NativeTensor* t = a.tensor(i, name, ref->dtype());
  a.expect_shape(t, name, ref->shape());
  return t;
}

template <class T>
T* ptr(NativeTensor* t) {
  return t ? static_cast<T*>(t->data()) : nullptr;
}
float* f32(NativeTensor* t) { return ptr<float>(t); }
const int32_t* i32(NativeTensor* t) { return static_cast<const int32_t*>(t->data()); }

// Runs body(S{}) with S the C++ storage type (float or bf16) of `principal`,
// the tensor whose dtype decides which typed op runs (backend_ops_typed.def).
// The other storage arguments are fetched with a.tensor(i, name, dt).
template <class Body>
void typed(NativeTensor* principal, Body&& body) {
  if (principal->dtype() == DType::BF16) body(bf16{});
  else body(float{});  // storage_tensor admitted only float32 and bfloat16
}

DropoutRng rng_arg(Args& a, size_t seed_index) {
  return DropoutRng{a.uint53(seed_index, "seed"), a.uint53(seed_index + 1, "stream")};
}

// The dropout arguments (p, seed, stream) from index i on.
struct DropoutArgs {
  float p;
  DropoutRng rng;
};
DropoutArgs dropout_args(Args& a, size_t i) {
  float p = static_cast<float>(a.number_in(i, "p", 0.0, 0.999999));
  return {p, rng_arg(a, i + 1)};
}

// ---- helpers ------------------------------------------------------------------------
void Fill(Args& a) {
  auto x = a.storage_tensor(0, "x");
  float v = static_cast<float>(a.number(1, "value"));
  typed(x, [&](auto s) { LAUNCH(a, fill, ptr<decltype(s)>(x), x->numel(), v); });
}

void Scale(Args& a) {
  auto x = a.storage_tensor(0, "x");
  float f = static_cast<float>(a.number(1, "factor"));
  typed(x, [&](auto s) { LAUNCH(a, scale, ptr<decltype(s)>(x), x->numel(), f); });
}

void Add(Args& a) {
  auto out = a.storage_tensor(0, "out");
  auto x = tensor_like(a, 1, "a", out), y = tensor_like(a, 2, "b", out);
  typed(out, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, add, ptr<S>(out), ptr<S>(x), ptr<S>(y), out->numel());
  });
}

void Accumulate(Args& a) {
  auto dst = a.storage_tensor(0, "dst");
  auto src = a.tensor(1, "src", dst->dtype());
  a.expect_numel(src, "src", dst->numel());
  typed(dst, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, accumulate, ptr<S>(dst), ptr<S>(src), dst->numel());
  });
}

// convert(dst, src): float32 <-> bfloat16 (round to nearest even), or a copy
// when both have the same dtype.
void Convert(Args& a) {
  auto dst = a.storage_tensor(0, "dst"), src = a.storage_tensor(1, "src");
  a.expect_numel(src, "src", dst->numel());
  if (dst->dtype() == DType::BF16 && src->dtype() == DType::F32) {
    LAUNCH(a, to_storage, ptr<bf16>(dst), f32(src), dst->numel());
  } else if (dst->dtype() == DType::F32 && src->dtype() == DType::BF16) {
    LAUNCH(a, from_storage, f32(dst), ptr<bf16>(src), dst->numel());
  } else {
    typed(dst, [&](auto s) {
      using S = decltype(s);
      LAUNCH(a, copy, static_cast<void*>(ptr<S>(dst)), static_cast<const void*>(ptr<S>(src)),
             dst->numel() * sizeof(S));
    });
  }
}

// copy(dst, src): same dtype and element count, across devices too.
void Copy(Args& a) {
  auto dst = a.any_tensor(0, "dst"), src = a.any_tensor(1, "src");
  if (dst->dtype() != src->dtype()) a.fail("dst and src must have the same dtype");
  a.expect_numel(src, "src", dst->numel());
  size_t bytes = static_cast<size_t>(mul(a, int64_t(dst->numel()), int64_t(dtype_size(dst->dtype())), "the byte count"));
  if (bytes == 0) return;
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
}

// fillNormal(x, mean, std, seed, stream) and fillUniform(x, lo, hi, seed, stream):
// seeded initialisation (float32: master weights), two parameters of the
// distribution, named u and v here.
using SeededFill = void (Backend::*)(float*, size_t, float, float, DropoutRng);
void seeded_fill(Args& a, SeededFill method, const char* u_name, const char* v_name) {
  auto x = a.tensor(0, "x");
  float u = static_cast<float>(a.number(1, u_name)), v = static_cast<float>(a.number(2, v_name));
  DropoutRng rng = rng_arg(a, 3);
  float* data = f32(x);
  size_t n = x->numel();
  a.launch([=](Backend* be) { (be->*method)(data, n, u, v, rng); });
}
void FillNormal(Args& a) { seeded_fill(a, &Backend::fill_normal, "mean", "std"); }
void FillUniform(Args& a) { seeded_fill(a, &Backend::fill_uniform, "lo", "hi"); }

// ---- embedding -------------------------------------------------------------------------
void EmbeddingForward(Args& a) {
  auto out = a.storage_tensor(0, "out");
  DType dt = out->dtype();
  auto ids = a.tensor(1, "ids", DType::I32);
  auto wte = a.tensor(2, "wte", dt), wpe = a.tensor(3, "wpe", dt);
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
  int b = as_int(a, B, "B"), t = as_int(a, T, "T"), c = as_int(a, C, "C"), v = as_int(a, V, "V");
  typed(out, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, embedding_forward, ptr<S>(out), i32(ids), ptr<S>(wte), ptr<S>(wpe), b, t, c, v, pos0);
  });
}

void EmbeddingBackward(Args& a) {
  auto dout = a.storage_tensor(2, "dout");
  DType dt = dout->dtype();
  auto dwte = a.optional_tensor(0, "dwte", dt), dwpe = a.optional_tensor(1, "dwpe", dt);
  auto ids = a.tensor(3, "ids", DType::I32);
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
  int b = as_int(a, B, "B"), t = as_int(a, T, "T"), c = as_int(a, C, "C");
  typed(dout, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, embedding_backward, ptr<S>(dwte), ptr<S>(dwpe), ptr<S>(dout), i32(ids), b, t, c, pos0);
  });
}

// Whether two tensors' elements share any byte.
bool overlap(NativeTensor* p, NativeTensor* q) {
  auto lo = [](NativeTensor* t) { return reinterpret_cast<uintptr_t>(t->data()); };
  auto hi = [&](NativeTensor* t) { return lo(t) + t->numel() * dtype_size(t->dtype()); };
  return p->numel() > 0 && q->numel() > 0 && lo(p) < hi(q) && lo(q) < hi(p);
}

// ---- layernorm ----------------------------------------------------------------------------
// N rows of C from inp, with weight [C] and the per-row mean and rstd [N] checked.
struct Rows {
  int N, width;  // width: C, or V for the classifier
};
Rows layernorm_rows(Args& a, NativeTensor* inp, NativeTensor* w, NativeTensor* mean, NativeTensor* rstd) {
  int64_t C = a.last_dim(inp, "inp"), N = a.rows(inp, "inp");
  a.expect_shape(w, "weight", {C});
  a.expect_numel(mean, "mean", N);
  a.expect_numel(rstd, "rstd", N);
  return {as_int(a, N, "N"), as_int(a, C, "C")};
}

void LayernormForward(Args& a) {
  auto inp = a.storage_tensor(3, "inp");
  DType dt = inp->dtype();
  auto out = a.tensor(0, "out", dt), mean = a.tensor(1, "mean"), rstd = a.tensor(2, "rstd");
  auto w = a.tensor(4, "weight", dt), bias = a.tensor(5, "bias", dt);
  Rows r = layernorm_rows(a, inp, w, mean, rstd);
  a.expect_shape(out, "out", inp->shape());
  a.expect_shape(bias, "bias", {r.width});
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, layernorm_forward, ptr<S>(out), f32(mean), f32(rstd), ptr<S>(inp), ptr<S>(w), ptr<S>(bias),
           r.N, r.width);
  });
}

// residualLayernormForward(residualOut, lnOut, mean, rstd, a, b, weight, bias):
// residualOut = a + b, lnOut = LayerNorm(residualOut), one pass per row.
void ResidualLayernormForward(Args& a) {
  auto x = a.storage_tensor(4, "a");
  DType dt = x->dtype();
  auto res = a.tensor(0, "residual_out", dt), out = a.tensor(1, "ln_out", dt);
  auto mean = a.tensor(2, "mean"), rstd = a.tensor(3, "rstd");
  auto y = a.tensor(5, "b", dt), w = a.tensor(6, "weight", dt), bias = a.tensor(7, "bias", dt);
  Rows r = layernorm_rows(a, x, w, mean, rstd);
  a.expect_shape(y, "b", x->shape());
  a.expect_shape(res, "residual_out", x->shape());
  a.expect_shape(out, "ln_out", x->shape());
  a.expect_shape(bias, "bias", {r.width});
  // The kernels read each residual row back after writing it and write ln_out
  // meanwhile; residual_out may be a or b exactly (read before written), no
  // other overlap gives defined results.
  for (auto [t, name] : {std::pair{res, "residual_out"}, {x, "a"}, {y, "b"}})
    if (overlap(out, t)) a.fail(std::string("ln_out overlaps ") + name + "; give it a buffer of its own");
  for (auto [t, name] : {std::pair{x, "a"}, {y, "b"}})
    if (res->data() != t->data() && overlap(res, t))
      a.fail(std::string("residual_out partly overlaps ") + name + "; it may only be " + name + " itself");
  typed(x, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, residual_layernorm_forward, ptr<S>(res), ptr<S>(out), f32(mean), f32(rstd), ptr<S>(x), ptr<S>(y),
           ptr<S>(w), ptr<S>(bias), r.N, r.width);
  });
}

void LayernormBackward(Args& a) {
  auto inp = a.storage_tensor(4, "inp");
  DType dt = inp->dtype();
  auto dinp = a.optional_tensor(0, "dinp", dt), dw = a.optional_tensor(1, "dweight", dt),
       db = a.optional_tensor(2, "dbias", dt);
  auto dout = a.tensor(3, "dout", dt), w = a.tensor(5, "weight", dt);
  auto mean = a.tensor(6, "mean"), rstd = a.tensor(7, "rstd");
  Rows r = layernorm_rows(a, inp, w, mean, rstd);
  a.expect_shape(dinp, "dinp", inp->shape());
  a.expect_shape(dout, "dout", inp->shape());
  a.expect_shape(dw, "dweight", {r.width});
  a.expect_shape(db, "dbias", {r.width});
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, layernorm_backward, ptr<S>(dinp), ptr<S>(dw), ptr<S>(db), ptr<S>(dout), ptr<S>(inp), ptr<S>(w),
           f32(mean), f32(rstd), r.N, r.width);
  });
}

// ---- GEMM / linear ---------------------------------------------------------------------------
// gemm(C, A, B, transA, transB, alpha, beta): C = alpha op(A) op(B) + beta C.
void Gemm(Args& a) {
  auto Cm = a.storage_tensor(0, "C");
  DType dt = Cm->dtype();
  auto Am = a.tensor(1, "A", dt), Bm = a.tensor(2, "B", dt);
  bool ta = a.boolean(3, "transA"), tb = a.boolean(4, "transB");
  float alpha = static_cast<float>(a.number(5, "alpha")), beta = static_cast<float>(a.number(6, "beta"));
  a.expect_rank(Cm, "C", 2);
  a.expect_rank(Am, "A", 2);
  a.expect_rank(Bm, "B", 2);
  int64_t M = Cm->shape()[0], N = Cm->shape()[1];
  int64_t K = ta ? Am->shape()[0] : Am->shape()[1];
  a.expect_shape(Am, "A", ta ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K});
  a.expect_shape(Bm, "B", tb ? std::vector<int64_t>{N, K} : std::vector<int64_t>{K, N});
  int m = as_int(a, M, "M"), n = as_int(a, N, "N"), k = as_int(a, K, "K");
  int lda = as_int(a, Am->shape()[1], "lda"), ldb = as_int(a, Bm->shape()[1], "ldb");
  typed(Cm, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, gemm, ta, tb, m, n, k, alpha, static_cast<const S*>(ptr<S>(Am)), lda,
           static_cast<const S*>(ptr<S>(Bm)), ldb, beta, ptr<S>(Cm), n);
  });
}

// A linear layer's sizes: inp [..., K] (M rows), weight [N, K], and its output
// [..., N], whose tensor (out or dout) is checked here.
struct Linear {
  int M, K, N;
};
Linear linear_dims(Args& a, NativeTensor* inp, NativeTensor* w, NativeTensor* y, const char* y_name,
                   const char* inp_name = "inp") {
  a.expect_rank(w, "weight", 2);
  int64_t N = w->shape()[0], K = w->shape()[1];
  if (a.last_dim(inp, inp_name) != K)
    a.fail(std::string(inp_name) + "'s last dimension must equal weight's second dimension (in_features " +
           std::to_string(K) + ")");
  int64_t M = a.rows(inp, inp_name);
  std::vector<int64_t> y_shape = inp->shape();
  y_shape.back() = N;
  a.expect_shape(y, y_name, y_shape);
  return {as_int(a, M, "M"), as_int(a, K, "K"), as_int(a, N, "N")};
}

void MatmulForward(Args& a) {
  auto inp = a.storage_tensor(1, "inp");
  DType dt = inp->dtype();
  auto out = a.tensor(0, "out", dt), w = a.tensor(2, "weight", dt);
  auto bias = a.optional_tensor(3, "bias", dt);
  Linear d = linear_dims(a, inp, w, out, "out");
  a.expect_shape(bias, "bias", {d.N});
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, matmul_forward, ptr<S>(out), static_cast<const S*>(ptr<S>(inp)), static_cast<const S*>(ptr<S>(w)),
           static_cast<const S*>(ptr<S>(bias)), d.M, d.K, d.N);
  });
}

void MatmulBackward(Args& a) {
  auto inp = a.storage_tensor(4, "inp");
  DType dt = inp->dtype();
  auto dinp = a.optional_tensor(0, "dinp", dt), dw = a.optional_tensor(1, "dweight", dt),
       db = a.optional_tensor(2, "dbias", dt);
  auto dout = a.tensor(3, "dout", dt), w = a.tensor(5, "weight", dt);
  Linear d = linear_dims(a, inp, w, dout, "dout");
  a.expect_shape(dinp, "dinp", inp->shape());
  a.expect_shape(dw, "dweight", {d.N, d.K});
  a.expect_shape(db, "dbias", {d.N});
  const bool accumulate = a.boolean(6, "accumulate");
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, matmul_backward, ptr<S>(dinp), ptr<S>(dw), ptr<S>(db), static_cast<const S*>(ptr<S>(dout)),
           static_cast<const S*>(ptr<S>(inp)), static_cast<const S*>(ptr<S>(w)), d.M, d.K, d.N, accumulate);
  });
}

// The MLP's first Linear with its GELU: pre = inp weight^T + bias, out = gelu(pre).
void MatmulGeluForward(Args& a) {
  auto inp = a.storage_tensor(2, "inp");
  DType dt = inp->dtype();
  auto out = a.tensor(0, "out", dt), pre = a.tensor(1, "pre", dt), w = a.tensor(3, "weight", dt);
  auto bias = a.optional_tensor(4, "bias", dt);
  Linear d = linear_dims(a, inp, w, out, "out");
  a.expect_shape(pre, "pre", out->shape());
  a.expect_shape(bias, "bias", {d.N});
  // The GEMM writes both outputs as it goes and reads neither back.
  if (overlap(out, pre)) a.fail("out overlaps pre; give each a buffer of its own");
  for (auto [t, name] : {std::pair{inp, "inp"}, {w, "weight"}, {bias, "bias"}})
    for (auto [o, oname] : {std::pair{out, "out"}, {pre, "pre"}})
      if (t && overlap(o, t)) a.fail(std::string(oname) + " overlaps " + name + "; give it a buffer of its own");
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, matmul_gelu_forward, ptr<S>(out), ptr<S>(pre), static_cast<const S*>(ptr<S>(inp)),
           static_cast<const S*>(ptr<S>(w)), static_cast<const S*>(ptr<S>(bias)), d.M, d.K, d.N);
  });
}

// The backward through a Linear (input act = gelu(pre)) and the GELU before it.
void GeluMatmulBackward(Args& a) {
  auto act = a.storage_tensor(4, "act");
  DType dt = act->dtype();
  auto dpre = a.tensor(0, "dpre", dt);
  auto dw = a.optional_tensor(1, "dweight", dt), db = a.optional_tensor(2, "dbias", dt);
  auto dout = a.tensor(3, "dout", dt), pre = a.tensor(5, "pre", dt), w = a.tensor(6, "weight", dt);
  Linear d = linear_dims(a, act, w, dout, "dout", "act");
  a.expect_shape(pre, "pre", act->shape());
  a.expect_shape(dpre, "dpre", act->shape());
  a.expect_shape(dw, "dweight", {d.N, d.K});
  a.expect_shape(db, "dbias", {d.N});
  const bool accumulate = a.boolean(7, "accumulate");
  for (auto [t, name] : {std::pair{dout, "dout"}, {act, "act"}, {pre, "pre"}, {w, "weight"}, {dw, "dweight"}, {db, "dbias"}})
    if (t && overlap(dpre, t)) a.fail(std::string("dpre overlaps ") + name + "; give it a buffer of its own");
  typed(act, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, gelu_matmul_backward, ptr<S>(dpre), ptr<S>(dw), ptr<S>(db), static_cast<const S*>(ptr<S>(dout)),
           static_cast<const S*>(ptr<S>(act)), static_cast<const S*>(ptr<S>(pre)), static_cast<const S*>(ptr<S>(w)),
           d.M, d.K, d.N, accumulate);
  });
}

// ---- GELU, dropout -------------------------------------------------------------------------
void GeluForward(Args& a) {
  auto inp = a.storage_tensor(1, "inp");
  auto out = tensor_like(a, 0, "out", inp);
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, gelu_forward, ptr<S>(out), static_cast<const S*>(ptr<S>(inp)), inp->numel());
  });
}

void GeluBackward(Args& a) {
  auto inp = a.storage_tensor(1, "inp");
  auto dinp = tensor_like(a, 0, "dinp", inp), dout = tensor_like(a, 2, "dout", inp);
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, gelu_backward, ptr<S>(dinp), static_cast<const S*>(ptr<S>(inp)),
           static_cast<const S*>(ptr<S>(dout)), inp->numel());
  });
}

void DropoutForward(Args& a) {
  auto inp = a.storage_tensor(1, "inp");
  auto out = tensor_like(a, 0, "out", inp);
  DropoutArgs dr = dropout_args(a, 2);
  typed(inp, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, dropout_forward, ptr<S>(out), static_cast<const S*>(ptr<S>(inp)), inp->numel(), dr.p, dr.rng);
  });
}

void DropoutBackward(Args& a) {
  auto dout = a.storage_tensor(1, "dout");
  auto dinp = tensor_like(a, 0, "dinp", dout);
  DropoutArgs dr = dropout_args(a, 2);
  typed(dout, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, dropout_backward, ptr<S>(dinp), static_cast<const S*>(ptr<S>(dout)), dout->numel(), dr.p, dr.rng);
  });
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

void AttentionForward(Args& a) {
  auto qkv = a.storage_tensor(2, "qkv");
  auto out = a.tensor(0, "out", qkv->dtype()), lse = a.tensor(1, "lse");
  AttnDims d = attention_dims(a, qkv, 3);
  DropoutArgs dr = dropout_args(a, 4);
  a.expect_shape(out, "out", {d.B, d.T, d.C});
  a.expect_shape(lse, "lse", {d.B, d.NH, d.T});
  typed(qkv, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, attention_forward, ptr<S>(out), f32(lse), static_cast<const S*>(ptr<S>(qkv)), d.B, d.T, d.C, d.NH,
           dr.p, dr.rng);
  });
}

void AttentionBackward(Args& a) {
  auto qkv = a.storage_tensor(2, "qkv");
  DType dt = qkv->dtype();
  auto dqkv = a.tensor(0, "dqkv", dt), dout = a.tensor(1, "dout", dt);
  auto out = a.tensor(3, "out", dt), lse = a.tensor(4, "lse");
  AttnDims d = attention_dims(a, qkv, 5);
  DropoutArgs dr = dropout_args(a, 6);
  a.expect_shape(dqkv, "dqkv", qkv->shape());
  a.expect_shape(dout, "dout", {d.B, d.T, d.C});
  a.expect_shape(out, "out", {d.B, d.T, d.C});
  a.expect_shape(lse, "lse", {d.B, d.NH, d.T});
  typed(qkv, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, attention_backward, ptr<S>(dqkv), static_cast<const S*>(ptr<S>(dout)),
           static_cast<const S*>(ptr<S>(qkv)), static_cast<const S*>(ptr<S>(out)),
           static_cast<const float*>(f32(lse)), d.B, d.T, d.C, d.NH, dr.p, dr.rng);
  });
}

// attentionDecode(out, kcache, vcache, qkv, pos0)
void AttentionDecode(Args& a) {
  auto qkv = a.storage_tensor(3, "qkv");
  DType dt = qkv->dtype();
  auto out = a.tensor(0, "out", dt), kc = a.tensor(1, "kcache", dt), vc = a.tensor(2, "vcache", dt);
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
  int b = as_int(a, B, "B"), tn = as_int(a, Tn, "Tn"), c = as_int(a, C, "C"), nh = as_int(a, NH, "NH");
  int tmax = as_int(a, Tmax, "Tmax");
  typed(qkv, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, attention_decode, ptr<S>(out), ptr<S>(kc), ptr<S>(vc), static_cast<const S*>(ptr<S>(qkv)), b, tn,
           c, nh, tmax, pos0);
  });
}

// ---- classifier ------------------------------------------------------------------------------
// N rows of V logits, with targets and losses [N] checked, and on the CPU
// every target in range (CUDA checks in-kernel).
Rows classifier_rows(Args& a, NativeTensor* logits, NativeTensor* targets, NativeTensor* losses,
                     int ignore_index) {
  int64_t V = a.last_dim(logits, "logits"), N = a.rows(logits, "logits");
  a.expect_numel(targets, "targets", N);
  a.expect_numel(losses, "losses", N);
  Rows r{as_int(a, N, "N"), as_int(a, V, "V")};
  if (targets->device() != DeviceKind::CPU) return r;
  const int32_t* t = i32(targets);
  for (size_t i = 0; i < targets->numel(); ++i)
    if (t[i] != ignore_index && (t[i] < 0 || t[i] >= V))
      a.fail("target " + std::to_string(t[i]) + " at row " + std::to_string(i) +
             " is out of range [0, " + std::to_string(V) + ") and is not the ignore index " +
             std::to_string(ignore_index));
  return r;
}

void CrossentropyForward(Args& a) {
  auto losses = a.tensor(0, "losses"), logits = a.storage_tensor(1, "logits");
  auto targets = a.tensor(2, "targets", DType::I32);
  int ignore = a.integer(3, "ignoreIndex", -kMaxInt, kMaxInt);
  Rows r = classifier_rows(a, logits, targets, losses, ignore);
  typed(logits, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, crossentropy_forward, f32(losses), static_cast<const S*>(ptr<S>(logits)), i32(targets), r.N,
           r.width, ignore);
  });
}

void CrossentropyForwardBackward(Args& a) {
  auto losses = a.tensor(0, "losses"), logits = a.storage_tensor(2, "logits");
  auto dlogits = a.tensor(1, "dlogits", logits->dtype());
  auto targets = a.tensor(3, "targets", DType::I32);
  float dloss = static_cast<float>(a.number(4, "dloss"));
  int ignore = a.integer(5, "ignoreIndex", -kMaxInt, kMaxInt);
  a.expect_shape(dlogits, "dlogits", logits->shape());
  Rows r = classifier_rows(a, logits, targets, losses, ignore);
  typed(logits, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, crossentropy_forward_backward, f32(losses), ptr<S>(dlogits), static_cast<const S*>(ptr<S>(logits)),
           i32(targets), r.N, r.width, dloss, ignore);
  });
}

// ---- optimizer --------------------------------------------------------------------------------
// adamw(master, grads, m, v, lr, beta1, beta2, eps, weightDecay, t[, params, seed, stream[, roundingOffset]]):
// master, m and v are float32; grads float32 or bfloat16. With bfloat16 grads,
// params (the model's bfloat16 copy) and the rounding RNG are required;
// roundingOffset (default 0) numbers the elements' draws from there.
void Adamw(Args& a) {
  auto grads = a.storage_tensor(1, "grads");
  auto master = a.tensor(0, "master"), m = a.tensor(2, "m"), v = a.tensor(3, "v");
  float lr = static_cast<float>(a.number_in(4, "lr", 0, 1e6));
  float b1 = static_cast<float>(a.number_in(5, "beta1", 0, 0.999999999));
  float b2 = static_cast<float>(a.number_in(6, "beta2", 0, 0.999999999));
  float eps = static_cast<float>(a.number_in(7, "eps", 0, 1));
  float wd = static_cast<float>(a.number_in(8, "weightDecay", 0, 1e6));
  int t = a.integer(9, "step", 1, kMaxInt);
  size_t n = master->numel();
  a.expect_numel(grads, "grads", n);
  a.expect_numel(m, "m", n);
  a.expect_numel(v, "v", n);
  NativeTensor* params = nullptr;
  DropoutRng rounding{};
  uint64_t offset = 0;
  if (grads->dtype() == DType::BF16) {
    params = a.tensor(10, "params", DType::BF16);
    a.expect_numel(params, "params", n);
    rounding = rng_arg(a, 11);
    if (a.present(13)) offset = a.uint53(13, "roundingOffset");
  }
  typed(grads, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, adamw, f32(master), static_cast<const S*>(ptr<S>(grads)), f32(m), f32(v), ptr<S>(params), n, lr,
           b1, b2, eps, wd, t, rounding, offset);
  });
}

void SumSquares(Args& a) {
  auto out = a.tensor(0, "out"), x = a.storage_tensor(1, "x");
  a.expect_numel(out, "out", 1);
  typed(x, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, sum_squares, f32(out), static_cast<const S*>(ptr<S>(x)), x->numel());
  });
}

void ClipByNorm(Args& a) {
  auto x = a.storage_tensor(0, "x"), norm_sq = a.tensor(1, "normSq");
  float max_norm = static_cast<float>(a.number_in(2, "maxNorm", 0, 1e30));
  a.expect_numel(norm_sq, "normSq", 1);
  typed(x, [&](auto s) {
    using S = decltype(s);
    LAUNCH(a, clip_by_norm, ptr<S>(x), x->numel(), static_cast<const float*>(f32(norm_sq)), max_norm);
  });
}

// ---- registration -------------------------------------------------------------------------------
using OpFn = void (*)(Args&);  // ops return nothing: results are written into tensors

struct OpEntry {
  const char* name;
  OpFn fn;
};

Napi::Value call_op(const Napi::CallbackInfo& info) {
  auto* entry = static_cast<const OpEntry*>(info.Data());
  Args args(info, entry->name);
  js_errors(info.Env(), std::string(entry->name) + ": ", [&] { entry->fn(args); });
  return info.Env().Undefined();
}

const OpEntry kOps[] = {
    {"fill", Fill},
    {"scale", Scale},
    {"add", Add},
    {"accumulate", Accumulate},
    {"copy", Copy},
    {"convert", Convert},
    {"fillNormal", FillNormal},
    {"fillUniform", FillUniform},
    {"embeddingForward", EmbeddingForward},
    {"embeddingBackward", EmbeddingBackward},
    {"layernormForward", LayernormForward},
    {"layernormBackward", LayernormBackward},
    {"residualLayernormForward", ResidualLayernormForward},
    {"gemm", Gemm},
    {"matmulForward", MatmulForward},
    {"matmulBackward", MatmulBackward},
    {"matmulGeluForward", MatmulGeluForward},
    {"geluMatmulBackward", GeluMatmulBackward},
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
