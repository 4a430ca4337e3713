// Correctness test for gptcuda::sgemm_blocked against a naive double-precision
// reference: all four transpose combinations, edge-heavy shapes, padded leading
// dimensions, several alpha/beta pairs (beta = 0 with NaN-filled C), and C's
// padding checked to be untouched. Exit code 0 when everything passes.
//
// Error measure: |C - ref| / (|alpha| * sum_k |a_ik * b_kj| + |beta * c_ij|),
// i.e. the error relative to the magnitude the sum was formed from, which is
// what float rounding is proportional to (cancellation cannot inflate it).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "gemm_blocked.h"

namespace {

struct Shape {
  int m, n, k;
};

struct Scalars {
  float alpha, beta;
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = 12345.0f;  // C padding must keep this value
constexpr double kTolerance = 1e-5;

std::mt19937 rng(1234);

// A row-major matrix stored with `ld` >= cols; padding holds `pad`.
struct Matrix {
  int rows, cols, ld;
  std::vector<float> data;
  Matrix(int r, int c, int extra_ld, float pad)
      : rows(r), cols(c), ld(c + extra_ld), data(size_t(r) * (c + extra_ld), pad) {}
  float& at(int i, int j) { return data[size_t(i) * ld + j]; }
  float at(int i, int j) const { return data[size_t(i) * ld + j]; }
  void fill_random() {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) at(i, j) = dist(rng);
  }
};

struct Result {
  double max_err = 0;
  bool padding_ok = true;
  bool finite = true;
};

Result run_case(bool ta, bool tb, Shape s, Scalars sc, int extra_ld) {
  // Stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K]. Padding of A and B
  // is NaN, so reading past a row's width poisons the result.
  Matrix a(ta ? s.k : s.m, ta ? s.m : s.k, extra_ld, kNaN);
  Matrix b(tb ? s.n : s.k, tb ? s.k : s.n, extra_ld + 1, kNaN);
  Matrix c(s.m, s.n, extra_ld + 2, kSentinel);
  a.fill_random();
  b.fill_random();
  if (sc.beta == 0.0f) {
    for (int i = 0; i < s.m; ++i)
      for (int j = 0; j < s.n; ++j) c.at(i, j) = kNaN;  // must not be read
  } else {
    c.fill_random();
  }
  const Matrix c0 = c;

  gptcuda::sgemm_blocked(ta, tb, s.m, s.n, s.k, sc.alpha, a.data.data(), a.ld, b.data.data(),
                         b.ld, sc.beta, c.data.data(), c.ld);

  Result r;
  for (int i = 0; i < s.m; ++i) {
    for (int j = 0; j < s.n; ++j) {
      double sum = 0, mag = 0;
      for (int p = 0; p < s.k; ++p) {
        const double x = ta ? a.at(p, i) : a.at(i, p);
        const double y = tb ? b.at(j, p) : b.at(p, j);
        sum += x * y;
        mag += std::fabs(x * y);
      }
      double ref = double(sc.alpha) * sum;
      mag *= std::fabs(sc.alpha);
      if (sc.beta != 0.0f) {
        ref += double(sc.beta) * c0.at(i, j);
        mag += std::fabs(double(sc.beta) * c0.at(i, j));
      }
      const double got = c.at(i, j);
      if (!std::isfinite(got)) {
        r.finite = false;
        continue;
      }
      const double err = std::fabs(got - ref) / (mag > 0 ? mag : 1.0);
      if (err > r.max_err) r.max_err = err;
    }
    for (int j = s.n; j < c.ld; ++j)
      if (c.at(i, j) != kSentinel) r.padding_ok = false;
  }
  return r;
}

}  // namespace

int main() {
  // Small and odd shapes get every alpha/beta pair; big ones (which take the
  // threaded path and several K/N blocks) get two.
  const std::vector<Shape> small = {
      {1, 1, 1},    {2, 3, 5},     {7, 7, 7},     {13, 17, 19},  {8, 48, 16},   {9, 49, 17},
      {64, 64, 64}, {65, 65, 65},  {127, 129, 131}, {1, 300, 300}, {300, 1, 300}, {50, 3, 513},
      {3, 50257, 5}, {5, 7, 0},    {31, 97, 1000}, {17, 1537, 33}, {513, 65, 127},
  };
  const std::vector<Shape> big = {
      {513, 513, 513}, {512, 768, 768}, {1000, 20, 40}, {2000, 50, 64}, {96, 2000, 64},
      {777, 61, 769},
  };
  const std::vector<Scalars> all_scalars = {
      {1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}, {1.0f, 1.0f}, {0.0f, 0.5f}, {2.0f, -1.0f}};
  const std::vector<Scalars> big_scalars = {{1.0f, 0.0f}, {0.75f, -0.5f}};

  int failures = 0, cases = 0;
  double worst = 0;
  auto check = [&](const std::vector<Shape>& shapes, const std::vector<Scalars>& scalars) {
    for (Shape s : shapes)
      for (int t = 0; t < 4; ++t)
        for (Scalars sc : scalars)
          for (int extra_ld : {0, 3}) {
            const bool ta = t & 1, tb = t & 2;
            const Result r = run_case(ta, tb, s, sc, extra_ld);
            ++cases;
            if (r.max_err > worst) worst = r.max_err;
            const bool ok = r.finite && r.padding_ok && r.max_err <= kTolerance;
            if (!ok) {
              ++failures;
              std::printf(
                  "FAIL M=%d N=%d K=%d transA=%d transB=%d alpha=%g beta=%g extra_ld=%d: "
                  "max_err=%.3g finite=%d padding_ok=%d\n",
                  s.m, s.n, s.k, ta, tb, sc.alpha, sc.beta, extra_ld, r.max_err, r.finite,
                  r.padding_ok);
            }
          }
  };
  check(small, all_scalars);
  check(big, big_scalars);
  std::printf("%d cases, %d failures, max relative error %.3g (tolerance %.0e)\n", cases,
              failures, worst, kTolerance);
  return failures == 0 ? 0 : 1;
}
