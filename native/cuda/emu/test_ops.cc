#include "crossentropy_k.h"
#include "layernorm_k.h"
#include "column_reduce.cuh"
#include "embedding_k.h"
#include "adamw_k.h"
#include "gelu_k.h"
#include "dropout_k.h"
#include "elementwise_k.h"
#include <cstdio>
#include <random>
#include <map>
using namespace gptcuda;
static std::mt19937 rng(7);
static std::vector<float> randv(size_t n, float s = 1.f) { std::normal_distribution<float> d(0.f, s); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v; }
static double md(const std::vector<float>& a, const std::vector<double>& b) { double m = 0; for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs((double)a[i]-b[i])/(1+std::fabs(b[i]))); return m; }
static bool report(const char* what, double e, double tol = 1e-5) { bool ok = e < tol; printf("%s %s: %.2e\n", ok ? "OK  " : "FAIL", what, e); return ok; }

// aligned float vector
struct AV { std::vector<float4> s; float* p; size_t n; AV(size_t n_, int off = 0) : s((n_ + 8) / 4 + 2), n(n_) { p = reinterpret_cast<float*>(s.data()) + off; } };

bool test_ce(int N, int V, bool aligned, bool inplace) {
  auto lg = randv((size_t)N*V, 3.f);
  std::vector<int32_t> tg(N);
  for (int i = 0; i < N; ++i) tg[i] = (i % 5 == 3) ? -100 : (int)(rng() % V);
  AV L((size_t)N*V, aligned ? 0 : 1); std::copy(lg.begin(), lg.end(), L.p);
  AV G((size_t)N*V, aligned ? 0 : 1);
  float* dl = inplace ? L.p : G.p;
  std::vector<float> loss(N, NAN), loss2(N, NAN);
  cudak::DeviceError err{};
  bool vec = V % 4 == 0 && cudak::aligned16(L.p) && cudak::aligned16(dl);
  float dloss = 0.25f;
  emu_launch(dim3(N), dim3(512), 0, k_crossentropy::crossentropy_kernel<false>, loss2.data(), (float*)nullptr, (const float*)L.p, (const int32_t*)tg.data(), V, 0.f, -100, vec, &err);
  emu_launch(dim3(N), dim3(512), 0, k_crossentropy::crossentropy_kernel<true>, loss.data(), dl, (const float*)L.p, (const int32_t*)tg.data(), V, dloss, -100, vec, &err);
  std::vector<double> rl(N), rg((size_t)N*V);
  for (int i = 0; i < N; ++i) {
    if (tg[i] == -100) { rl[i] = 0; continue; }
    double mx = -1e300; for (int v = 0; v < V; ++v) mx = std::max(mx, (double)lg[(size_t)i*V+v]);
    double s = 0; for (int v = 0; v < V; ++v) s += std::exp(lg[(size_t)i*V+v]-mx);
    double lse = mx + std::log(s);
    rl[i] = lse - lg[(size_t)i*V+tg[i]];
    for (int v = 0; v < V; ++v) rg[(size_t)i*V+v] = dloss*(std::exp(lg[(size_t)i*V+v]-lse) - (v == tg[i]));
  }
  std::vector<float> g(dl, dl + (size_t)N*V);
  char buf[128]; snprintf(buf, sizeof buf, "crossentropy N=%d V=%d vec=%d inplace=%d", N, V, vec, inplace);
  return report(buf, std::max({md(loss, rl), md(loss2, rl), md(g, rg)})) && err.code == 0;
}

bool test_ce_bad() {
  int N = 2, V = 8; std::vector<float> lg((size_t)N*V, 0.f), loss(N, NAN); std::vector<int32_t> tg = {3, 9};
  cudak::DeviceError err{};
  emu_launch(dim3(N), dim3(512), 0, k_crossentropy::crossentropy_kernel<true>, loss.data(), lg.data(), (const float*)lg.data(), (const int32_t*)tg.data(), V, 1.f, -100, false, &err);
  bool ok = err.code == 2 && err.value == 9 && err.bound == 8 && loss[1] == 0.f && std::fabs(loss[0] - std::log(8.0)) < 1e-5;
  printf("%s crossentropy bad target -> error record\n", ok ? "OK  " : "FAIL");
  return ok;
}

bool test_ln(int N, int C, int off) {
  auto x = randv((size_t)N*C, 2.f), w = randv(C), b = randv(C), go = randv((size_t)N*C);
  AV X((size_t)N*C, off), O((size_t)N*C, off), W(C, off), Bb(C, off);
  std::copy(x.begin(), x.end(), X.p); std::copy(w.begin(), w.end(), W.p); std::copy(b.begin(), b.end(), Bb.p);
  std::vector<float> mean(N), rstd(N);
  bool vec = C % 4 == 0 && cudak::aligned16(X.p) && cudak::aligned16(O.p) && cudak::aligned16(W.p) && cudak::aligned16(Bb.p);
  emu_launch(dim3((N+7)/8), dim3(256), 0, k_layernorm::layernorm_forward_kernel, O.p, mean.data(), rstd.data(), (const float*)X.p, (const float*)W.p, (const float*)Bb.p, N, C, vec);
  std::vector<double> ro((size_t)N*C), rdx((size_t)N*C), rdw(C), rdb(C);
  auto dx0 = randv((size_t)N*C, 0.1f), dw0 = randv(C, 0.1f), db0 = randv(C, 0.1f);
  for (size_t i = 0; i < rdx.size(); ++i) rdx[i] = dx0[i];
  for (int c = 0; c < C; ++c) { rdw[c] = dw0[c]; rdb[c] = db0[c]; }
  std::vector<double> rm(N), rr(N);
  for (int n = 0; n < N; ++n) {
    double m = 0; for (int c = 0; c < C; ++c) m += x[(size_t)n*C+c]; m /= C;
    double v = 0; for (int c = 0; c < C; ++c) v += (x[(size_t)n*C+c]-m)*(x[(size_t)n*C+c]-m); v /= C;
    double s = 1/std::sqrt(v + 1e-5); rm[n] = m; rr[n] = s;
    double a = 0, bsum = 0;
    for (int c = 0; c < C; ++c) { double nm = (x[(size_t)n*C+c]-m)*s; ro[(size_t)n*C+c] = nm*w[c]+b[c]; double dn = go[(size_t)n*C+c]*w[c]; a += dn; bsum += dn*nm; rdw[c] += go[(size_t)n*C+c]*nm; rdb[c] += go[(size_t)n*C+c]; }
    a /= C; bsum /= C;
    for (int c = 0; c < C; ++c) { double nm = (x[(size_t)n*C+c]-m)*s; double dn = go[(size_t)n*C+c]*w[c]; rdx[(size_t)n*C+c] += (dn - a - nm*bsum)*s; }
  }
  std::vector<float> o(O.p, O.p + (size_t)N*C);
  bool ok = report(("layernorm fwd N=" + std::to_string(N) + " C=" + std::to_string(C) + " vec=" + std::to_string(vec)).c_str(), std::max({md(o, ro), md(mean, rm), md(rstd, rr)}), 1e-4);
  std::vector<float> dx = dx0, dw = dw0, db = db0;
  emu_launch(dim3((N+7)/8), dim3(256), 0, k_layernorm::layernorm_backward_dinp_kernel, dx.data(), (const float*)go.data(), (const float*)x.data(), (const float*)w.data(), (const float*)mean.data(), (const float*)rstd.data(), N, C);
  int chunks = cudak::column_chunks(N);
  std::vector<float> part((size_t)chunks*C*2, NAN);
  emu_launch(dim3((C+31)/32, chunks), dim3(32, 8), 0, cudak::column_partials_kernel<true>, part.data(), part.data() + (size_t)chunks*C, (const float*)go.data(), (const float*)x.data(), (const float*)mean.data(), (const float*)rstd.data(), N, C);
  emu_launch(dim3((C+255)/256), dim3(256), 0, cudak::column_finish_kernel, dw.data(), db.data(), (const float*)part.data(), (const float*)part.data() + (size_t)chunks*C, chunks, C);
  ok &= report("layernorm bwd", std::max({md(dx, rdx), md(dw, rdw), md(db, rdb)}), 1e-4);
  // plain column sums (matmul dbias)
  std::vector<float> cs = db0; std::vector<double> rcs(C);
  for (int c = 0; c < C; ++c) { rcs[c] = db0[c]; for (int n = 0; n < N; ++n) rcs[c] += go[(size_t)n*C+c]; }
  emu_launch(dim3((C+31)/32, chunks), dim3(32, 8), 0, cudak::column_partials_kernel<false>, part.data(), (float*)nullptr, (const float*)go.data(), (const float*)nullptr, (const float*)nullptr, (const float*)nullptr, N, C);
  emu_launch(dim3((C+255)/256), dim3(256), 0, cudak::column_finish_kernel, cs.data(), (float*)nullptr, (const float*)part.data(), (const float*)nullptr, chunks, C);
  ok &= report("column sums", md(cs, rcs), 1e-4);
  return ok;
}

bool test_embedding(int B, int T, int C, int V, int pos0, int off) {
  int BT = B*T;
  std::vector<int32_t> ids(BT); for (auto& i : ids) i = rng() % V;
  ids[0] = ids[BT-1];  // a repeat
  auto wte = randv((size_t)V*C), wpe = randv((size_t)(pos0+T)*C);
  AV O((size_t)BT*C, off), WT((size_t)V*C, off), WP((size_t)(pos0+T)*C, off);
  std::copy(wte.begin(), wte.end(), WT.p); std::copy(wpe.begin(), wpe.end(), WP.p);
  bool vec = C % 4 == 0 && cudak::aligned16(O.p) && cudak::aligned16(WT.p) && cudak::aligned16(WP.p);
  cudak::DeviceError err{};
  emu_launch(dim3(4), dim3(256), 0, k_embedding::embedding_forward_kernel, O.p, (const int32_t*)ids.data(), (const float*)WT.p, (const float*)WP.p, BT, T, C, V, pos0, vec, &err);
  std::vector<double> ro((size_t)BT*C);
  for (int bt = 0; bt < BT; ++bt) for (int c = 0; c < C; ++c) ro[(size_t)bt*C+c] = (double)wte[(size_t)ids[bt]*C+c] + wpe[(size_t)(pos0 + bt%T)*C+c];
  std::vector<float> o(O.p, O.p + (size_t)BT*C);
  bool ok = report(("embedding fwd vec=" + std::to_string(vec)).c_str(), md(o, ro)) && err.code == 0;
  // backward
  auto go = randv((size_t)BT*C);
  auto dwte = randv((size_t)V*C, 0.1f), dwpe = randv((size_t)(pos0+T)*C, 0.1f);
  std::vector<double> rdte(dwte.begin(), dwte.end()), rdpe(dwpe.begin(), dwpe.end());
  for (int bt = 0; bt < BT; ++bt) for (int c = 0; c < C; ++c) { rdte[(size_t)ids[bt]*C+c] += go[(size_t)bt*C+c]; rdpe[(size_t)(pos0+bt%T)*C+c] += go[(size_t)bt*C+c]; }
  emu_launch(dim3(3), dim3(256), 0, k_embedding::embedding_backward_wpe_kernel, dwpe.data(), (const float*)go.data(), B, T, C, pos0);
  std::vector<int32_t> pos(BT); for (int i = 0; i < BT; ++i) pos[i] = i;
  std::stable_sort(pos.begin(), pos.end(), [&](int a, int b) { return ids[a] < ids[b]; });
  std::vector<int32_t> keys(BT); for (int i = 0; i < BT; ++i) keys[i] = ids[pos[i]];
  int block = C >= 256 ? 256 : ((C + 31) / 32) * 32;
  emu_launch(dim3(BT, (C + block - 1)/block), dim3(block), 0, k_embedding::embedding_backward_wte_kernel, dwte.data(), (const float*)go.data(), (const int32_t*)keys.data(), (const int32_t*)pos.data(), BT, C, (const cudak::DeviceError*)&err);
  ok &= report("embedding bwd", std::max(md(dwte, rdte), md(dwpe, rdpe)));
  // bad id
  ids[1] = V + 3;
  emu_launch(dim3(4), dim3(256), 0, k_embedding::embedding_forward_kernel, O.p, (const int32_t*)ids.data(), (const float*)WT.p, (const float*)WP.p, BT, T, C, V, pos0, vec, &err);
  bool e = err.code == 1 && err.value == V + 3 && err.bound == V;
  printf("%s embedding bad id -> error record\n", e ? "OK  " : "FAIL");
  return ok && e;
}

bool test_opt(size_t n, int off) {
  auto x = randv(n);
  AV X(n, off); std::copy(x.begin(), x.end(), X.p);
  bool vec = cudak::aligned16(X.p);
  size_t per_block = 256 * 8; int blocks = (int)std::min<size_t>(1024, (n + per_block - 1) / per_block);
  std::vector<float> part(1024, NAN); float out = NAN;
  emu_launch(dim3(blocks), dim3(256), 0, k_adamw::sum_squares_partial_kernel, part.data(), (const float*)X.p, n, vec);
  emu_launch(dim3(1), dim3(1024), 0, k_adamw::sum_partials_kernel, &out, (const float*)part.data(), blocks);
  double r = 0; for (float v : x) r += (double)v*v;
  bool ok = report(("sum_squares n=" + std::to_string(n) + " vec=" + std::to_string(vec)).c_str(), std::fabs(out - r)/r, 1e-5);
  // clip
  float ns = (float)r; std::vector<float> y = x;
  emu_launch(dim3(2), dim3(256), 0, k_adamw::clip_by_norm_kernel, y.data(), n, (const float*)&ns, 1.0f);
  double s = 1.0 / (std::sqrt(r) + 1e-6); std::vector<double> ry(n); for (size_t i = 0; i < n; ++i) ry[i] = x[i]*s;
  ok &= report("clip_by_norm", md(y, ry));
  // adamw
  auto g = randv(n); auto m0 = randv(n, 0.1f); std::vector<float> v0(n); for (auto& v : v0) v = std::fabs(randv(1)[0]) * 0.01f;
  AV P(n, off), G(n, off), Mm(n, off), Vv(n, off);
  std::copy(x.begin(), x.end(), P.p); std::copy(g.begin(), g.end(), G.p); std::copy(m0.begin(), m0.end(), Mm.p); std::copy(v0.begin(), v0.end(), Vv.p);
  k_adamw::AdamParams a; a.lr = 1e-3f; a.beta1 = 0.9f; a.beta2 = 0.95f; a.eps = 1e-8f; a.weight_decay = 0.1f; int t = 3;
  a.inv_bc1 = 1.0/(1-std::pow(0.9, t)); a.inv_bc2 = 1.0/(1-std::pow(0.95, t));
  emu_launch(dim3(3), dim3(256), 0, k_adamw::adamw_kernel, P.p, (const float*)G.p, Mm.p, Vv.p, n, a, vec);
  std::vector<double> rp(n);
  for (size_t i = 0; i < n; ++i) { double m = 0.9*m0[i] + 0.1*g[i], v = 0.95*v0[i] + 0.05*(double)g[i]*g[i]; rp[i] = x[i] - 1e-3*((m*a.inv_bc1)/(std::sqrt(v*a.inv_bc2)+1e-8) + 0.1*x[i]); }
  std::vector<float> p(P.p, P.p + n);
  ok &= report("adamw", md(p, rp), 1e-5);
  return ok;
}

bool test_pointwise(size_t n, int off) {
  auto x = randv(n, 2.f), go = randv(n);
  AV X(n, off), Y(n, off), D(n, off);
  std::copy(x.begin(), x.end(), X.p);
  for (size_t i = 0; i < n; ++i) D.p[i] = 0.5f;
  bool vec = cudak::aligned16(X.p);
  emu_launch(dim3(2), dim3(256), 0, k_gelu::gelu_forward_kernel, Y.p, (const float*)X.p, n, vec);
  emu_launch(dim3(2), dim3(256), 0, k_gelu::gelu_backward_kernel, D.p, (const float*)X.p, (const float*)go.data(), n, vec);
  std::vector<double> ry(n), rd(n);
  auto gl = [](double v) { return 0.5*v*(1+std::tanh(std::sqrt(2/M_PI)*(v+0.044715*v*v*v))); };
  for (size_t i = 0; i < n; ++i) { ry[i] = gl(x[i]); double h = 1e-4; rd[i] = 0.5 + go[i]*(gl(x[i]+h)-gl(x[i]-h))/(2*h); }
  std::vector<float> y(Y.p, Y.p+n), d(D.p, D.p+n);
  bool ok = report("gelu fwd", md(y, ry)) & report("gelu bwd", md(d, rd), 1e-5);
  // dropout
  float p = 0.3f; std::vector<float> o(n), di(n, 1.f);
  emu_launch(dim3(2), dim3(256), 0, k_dropout::dropout_forward_kernel, o.data(), (const float*)x.data(), n, p, 1.f/(1.f-p), (uint64_t)5, (uint64_t)9);
  emu_launch(dim3(2), dim3(256), 0, k_dropout::dropout_backward_kernel, di.data(), (const float*)go.data(), n, p, 1.f/(1.f-p), (uint64_t)5, (uint64_t)9);
  std::vector<double> ro(n), rdi(n); size_t kept = 0;
  for (size_t i = 0; i < n; ++i) { bool k = dropout_keep(5, 9, i, p); kept += k; ro[i] = k ? x[i]/(1-p) : 0; rdi[i] = 1 + (k ? go[i]/(1-p) : 0); }
  ok &= report(("dropout (kept " + std::to_string(kept) + "/" + std::to_string(n) + ")").c_str(), std::max(md(o, ro), md(di, rdi)));
  // elementwise
  AV A(n, off), Bv(n, off), Cc(n, off);
  for (size_t i = 0; i < n; ++i) { A.p[i] = x[i]; Bv.p[i] = go[i]; }
  emu_launch(dim3(2), dim3(256), 0, k_elementwise::add_kernel, Cc.p, (const float*)A.p, (const float*)Bv.p, n, vec);
  emu_launch(dim3(2), dim3(256), 0, k_elementwise::accumulate_kernel, Cc.p, (const float*)A.p, n, vec);
  emu_launch(dim3(2), dim3(256), 0, k_elementwise::scale_kernel, Cc.p, n, 0.5f, vec);
  std::vector<double> rc(n); for (size_t i = 0; i < n; ++i) rc[i] = 0.5*(2.0*x[i] + go[i]);
  std::vector<float> c(Cc.p, Cc.p+n);
  ok &= report("add/accumulate/scale", md(c, rc));
  emu_launch(dim3(2), dim3(256), 0, k_elementwise::fill_kernel, Cc.p, n, 3.f, vec);
  bool f = true; for (size_t i = 0; i < n; ++i) f &= Cc.p[i] == 3.f;
  f &= std::isnan(Cc.p[n]) || Cc.p[n] != 3.f;  // no overrun (AV storage zero-init -> 0)
  printf("%s fill\n", f ? "OK  " : "FAIL");
  return ok && f;
}

int main() {
  bool ok = true;
  ok &= test_ce(6, 50, true, false);
  ok &= test_ce(6, 64, true, true);
  ok &= test_ce(5, 64, false, false);
  ok &= test_ce(3, 2053, true, true);
  ok &= test_ce_bad();
  ok &= test_ln(300, 37, 0);
  ok &= test_ln(20, 64, 0);
  ok &= test_ln(9, 64, 1);
  ok &= test_ln(600, 130, 0);
  ok &= test_embedding(2, 7, 37, 11, 0, 0);
  ok &= test_embedding(3, 5, 64, 9, 4, 0);
  ok &= test_embedding(1, 9, 300, 50, 2, 1);
  ok &= test_opt(5000, 0);
  ok &= test_opt(5003, 1);
  ok &= test_opt(70001, 0);
  ok &= test_pointwise(1031, 0);
  ok &= test_pointwise(1031, 3);
  printf(ok ? "ALL OK\n" : "SOME FAILED\n");
  return ok ? 0 : 1;
}
