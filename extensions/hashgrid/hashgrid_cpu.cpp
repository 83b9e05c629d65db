// Multi-resolution hash-grid encoding on the CPU (OpenMP), forward and backward.
// The same layout and arithmetic as dreamfusion/nerf/hashgrid.py (tiny-cuda-nn's): see there.
//
// The fine levels' rows are tens of megabytes and are read at random, so speed is set by the
// memory system, not by arithmetic. Three things keep it fed:
// * level-major order: a level's rows (at most 2^19 x features floats) stay in the cache while
//   all of a thread's points read or update them; point-major order touches every level's rows
//   for every point and runs at DRAM latency, several times slower;
// * a software pipeline: the rows of the point kAhead places ahead are prefetched while the
//   current point's are used, so that many misses are in flight;
// * blocks of kBlock points in structure-of-arrays form, so that computing cells, hashes and
//   weights vectorizes.
// Level-major staging costs two transposes (features out, gradients in), in cache-sized tiles.
#include <torch/extension.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int kMaxLevels = 32;
constexpr int kMaxFeatures = 16;
constexpr int kAhead = 8;     // points between a prefetch and the use of its rows

struct Levels {
  int n, n_dense, feats;
  uint32_t mask;
  float scale[kMaxLevels];
  int64_t res[kMaxLevels], size[kMaxLevels], offset[kMaxLevels];
};

// One level of one point: the table rows of its cell's 8 corners (corner c = 4 ix + 2 iy + iz)
// and their trilinear weights.
struct Cell {
  uint32_t row[8];
  float w[8];
  float frac[3];
};

inline void cell_at(const float* x, int l, const Levels& lv, Cell& out) {
  int64_t e[3];
  for (int d = 0; d < 3; ++d) {
    const float p = x[d] * lv.scale[l] + 0.5f;
    const float f = std::floor(p);
    e[d] = static_cast<int64_t>(f);
    out.frac[d] = p - f;
  }
  if (l < lv.n_dense) {
    const int64_t r = lv.res[l], size = lv.size[l];
    const int64_t v = e[0] + e[1] * r + e[2] * r * r;
    const int64_t step[8] = {0, 1 * r * r, r, r + r * r, 1, 1 + r * r, 1 + r, 1 + r + r * r};
    for (int c = 0; c < 8; ++c) {
      int64_t idx = v + step[c];
      if (idx < 0 || idx >= size) idx = ((idx % size) + size) % size;  // outside the grid: wrap
      out.row[c] = static_cast<uint32_t>(idx + lv.offset[l]);
    }
  } else {
    const uint32_t h0[2] = {static_cast<uint32_t>(e[0]), static_cast<uint32_t>(e[0] + 1)};
    const uint32_t h1[2] = {static_cast<uint32_t>(e[1]) * kPrime1,
                            static_cast<uint32_t>(e[1] + 1) * kPrime1};
    const uint32_t h2[2] = {static_cast<uint32_t>(e[2]) * kPrime2,
                            static_cast<uint32_t>(e[2] + 1) * kPrime2};
    const uint32_t base = static_cast<uint32_t>(lv.offset[l]);
    for (int c = 0; c < 8; ++c)
      out.row[c] = ((h0[(c >> 2) & 1] ^ h1[(c >> 1) & 1] ^ h2[c & 1]) & lv.mask) + base;
  }
  const float* f = out.frac;
  const float wx[2] = {1.0f - f[0], f[0]}, wy[2] = {1.0f - f[1], f[1]}, wz[2] = {1.0f - f[2], f[2]};
  for (int c = 0; c < 8; ++c) out.w[c] = wx[(c >> 2) & 1] * wy[(c >> 1) & 1] * wz[c & 1];
}

Levels levels(const torch::Tensor& scale, const torch::Tensor& res, const torch::Tensor& size,
              const torch::Tensor& offset, int64_t n_dense, int64_t table_size, int64_t feats) {
  Levels lv;
  lv.n = static_cast<int>(scale.size(0));
  TORCH_CHECK(lv.n <= kMaxLevels, "hashgrid_cpu: at most 32 levels");
  TORCH_CHECK(feats <= kMaxFeatures, "hashgrid_cpu: at most 16 features per level");
  lv.n_dense = static_cast<int>(n_dense);
  lv.feats = static_cast<int>(feats);
  lv.mask = static_cast<uint32_t>(table_size - 1);
  for (int l = 0; l < lv.n; ++l) {
    lv.scale[l] = scale[l].item<float>();
    lv.res[l] = res[l].item<int64_t>();
    lv.size[l] = size[l].item<int64_t>();
    lv.offset[l] = offset[l].item<int64_t>();
  }
  TORCH_CHECK(lv.offset[lv.n - 1] + lv.size[lv.n - 1] < (int64_t{1} << 32), "hashgrid_cpu: table too large");
  return lv;
}

void check(const torch::Tensor& x, const torch::Tensor& params) {
  TORCH_CHECK(x.device().is_cpu() && params.device().is_cpu(), "hashgrid_cpu: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && params.scalar_type() == torch::kFloat32,
              "hashgrid_cpu: float32 only");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.is_contiguous(), "x must be (N, 3), contiguous");
  TORCH_CHECK(params.dim() == 2 && params.is_contiguous(), "params must be (T, F), contiguous");
}

// The points [begin, end) of this thread, for a static split of n.
inline void share(int64_t n, int64_t& begin, int64_t& end) {
#ifdef _OPENMP
  const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
  const int64_t t = 0, nt = 1;
#endif
  const int64_t chunk = (n + nt - 1) / nt;
  begin = std::min(n, t * chunk);
  end = std::min(n, begin + chunk);
}

// A level-major staging buffer, kept between calls: a fresh one would cost a page fault per
// 4 KiB on every call, as much as the transposes it serves.
// Callers hold scratch_mutex() while they use it.
std::mutex& scratch_mutex() {
  static std::mutex m;
  return m;
}
float* scratch(size_t floats) {
  static std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

constexpr int kBlock = 256;    // points whose cells are computed together, in SIMD lanes

// One level of a block of points, structure-of-arrays so that the arithmetic vectorizes: the
// table rows of each point's 8 cell corners (corner c = 4 ix + 2 iy + iz) and their weights.
struct Block {
  alignas(64) float x[3][kBlock + 16];  // padded: power-of-two strides alias in the L1 cache
  alignas(64) uint32_t row[8][kBlock + 16];
  alignas(64) float w[8][kBlock + 16];
  int count;

  void load(const float* xp, int64_t start, int64_t n) {
    count = static_cast<int>(std::min<int64_t>(kBlock, n - start));
    for (int i = 0; i < count; ++i)
      for (int d = 0; d < 3; ++d) x[d][i] = xp[3 * (start + i) + d];
  }

  void cells(int l, const Levels& lv) {
    const int n = count;
    const float* __restrict__ x0 = x[0];
    const float* __restrict__ x1 = x[1];
    const float* __restrict__ x2 = x[2];
    const float s = lv.scale[l];
    const uint32_t base = static_cast<uint32_t>(lv.offset[l]);
    if (l < lv.n_dense) {
      const int32_t r = static_cast<int32_t>(lv.res[l]), size = static_cast<int32_t>(lv.size[l]);
      int wrapped = 0;
#pragma omp simd reduction(| : wrapped)
      for (int i = 0; i < n; ++i) {
        const int32_t v = static_cast<int32_t>(std::floor(x0[i] * s + 0.5f)) +
                          static_cast<int32_t>(std::floor(x1[i] * s + 0.5f)) * r +
                          static_cast<int32_t>(std::floor(x2[i] * s + 0.5f)) * r * r;
        for (int c = 0; c < 8; ++c) {
          int32_t idx = v + ((c >> 2) & 1) + ((c >> 1) & 1) * r + (c & 1) * r * r;
          idx = idx >= size ? idx - size : idx;   // one past the far face wraps, as in tcnn
          wrapped |= (idx < 0) | (idx >= size);
          row[c][i] = static_cast<uint32_t>(idx) + base;
        }
      }
      if (wrapped) wrap_scalar(l, lv);
    } else {
      const uint32_t mask = lv.mask;
#pragma omp simd
      for (int i = 0; i < n; ++i) {
        const uint32_t a0 = static_cast<uint32_t>(static_cast<int32_t>(std::floor(x0[i] * s + 0.5f)));
        const uint32_t a1 = static_cast<uint32_t>(static_cast<int32_t>(std::floor(x1[i] * s + 0.5f))) * kPrime1;
        const uint32_t a2 = static_cast<uint32_t>(static_cast<int32_t>(std::floor(x2[i] * s + 0.5f))) * kPrime2;
        const uint32_t b0 = a0 + 1u, b1 = a1 + kPrime1, b2 = a2 + kPrime2;
        for (int c = 0; c < 8; ++c)
          row[c][i] = ((((c >> 2) & 1 ? b0 : a0) ^ ((c >> 1) & 1 ? b1 : a1) ^ (c & 1 ? b2 : a2))
                       & mask) + base;
      }
    }
#pragma omp simd
    for (int i = 0; i < n; ++i) {
      const float p0 = x0[i] * s + 0.5f, p1 = x1[i] * s + 0.5f, p2 = x2[i] * s + 0.5f;
      const float f0 = p0 - std::floor(p0), f1 = p1 - std::floor(p1), f2 = p2 - std::floor(p2);
      const float g0 = 1.0f - f0, g1 = 1.0f - f1, g2 = 1.0f - f2;
      w[0][i] = g0 * g1 * g2; w[1][i] = g0 * g1 * f2; w[2][i] = g0 * f1 * g2; w[3][i] = g0 * f1 * f2;
      w[4][i] = f0 * g1 * g2; w[5][i] = f0 * g1 * f2; w[6][i] = f0 * f1 * g2; w[7][i] = f0 * f1 * f2;
    }
  }

  // Points far outside the unit cube: the floor-modulo of the dense index, in 64 bits.
  void wrap_scalar(int l, const Levels& lv) {
    const int64_t r = lv.res[l], size = lv.size[l];
    for (int i = 0; i < count; ++i) {
      int64_t e[3];
      for (int d = 0; d < 3; ++d) e[d] = static_cast<int64_t>(std::floor(x[d][i] * lv.scale[l] + 0.5f));
      for (int c = 0; c < 8; ++c) {
        const int64_t v = e[0] + ((c >> 2) & 1) + (e[1] + ((c >> 1) & 1)) * r + (e[2] + (c & 1)) * r * r;
        row[c][i] = static_cast<uint32_t>(((v % size) + size) % size + lv.offset[l]);
      }
    }
  }

  template <int Write>
  void prefetch(int i, const float* table, int feats) const {
    for (int c = 0; c < 8; ++c)
      __builtin_prefetch(table + static_cast<int64_t>(row[c][i]) * feats, Write, 3);
  }

  // The points [start, min(n, start + kBlock)) at level l: their cells, then use(i) for each
  // in turn while the table rows of the point kAhead places on are prefetched (for writing
  // if Write).
  template <int Write, typename Use>
  void sweep(const float* xp, int64_t start, int64_t n, int l, const Levels& lv,
             const float* table, int feats, Use use) {
    load(xp, start, n);
    cells(l, lv);
    for (int i = 0; i < std::min(count, kAhead); ++i) prefetch<Write>(i, table, feats);
    for (int i = 0; i < count; ++i) {
      if (i + kAhead < count) prefetch<Write>(i + kAhead, table, feats);
      use(i);
    }
  }
};

// Level-major over each thread's points: one level's rows (a few megabytes at most) stay in the
// cache while all the thread's points read them; point-major order spreads every point's reads
// over the whole table, several times the last-level cache, and runs at DRAM latency.
template <int F>
void forward_impl(const float* __restrict__ xp, const float* __restrict__ table,
                  float* __restrict__ op, int64_t n, const Levels& lv) {
  const int feats = F > 0 ? F : lv.feats, L = lv.n;
  float* const staged = scratch(static_cast<size_t>(n) * L * feats);
#pragma omp parallel
  {
    int64_t begin, end;
    share(n, begin, end);
    auto block = std::make_unique<Block>();
    float* const stage = staged + begin * L * feats;
    for (int l = 0; l < L; ++l) {
      for (int64_t start = begin; start < end; start += kBlock) {
        block->sweep<0>(xp, start, end, l, lv, table, feats, [&](int i) {
          float acc[F > 0 ? F : kMaxFeatures] = {0.0f};
          for (int c = 0; c < 8; ++c) {
            const float* v = table + static_cast<int64_t>(block->row[c][i]) * feats;
            const float wc = block->w[c][i];
            for (int f = 0; f < feats; ++f) acc[f] += wc * v[f];
          }
          float* o = stage + (static_cast<int64_t>(l) * (end - begin) + start - begin + i) * feats;
          for (int f = 0; f < feats; ++f) o[f] = acc[f];
        });
      }
    }
    // back to point-major, in tiles that stay in the cache
    const int64_t m = end - begin;
    for (int64_t i0 = 0; i0 < m; i0 += 64)
      for (int l = 0; l < L; ++l)
        for (int64_t i = i0; i < std::min(m, i0 + 64); ++i)
          for (int f = 0; f < feats; ++f)
            op[((begin + i) * L + l) * feats + f] = stage[(l * m + i) * feats + f];
  }
}

// Levels own disjoint rows of the table, so each level's gradient is one thread's: no atomics.
template <int F>
void backward_table_impl(const float* __restrict__ xp, const float* __restrict__ go_points,
                         float* __restrict__ gp, int64_t n, const Levels& lv) {
  const int feats = F > 0 ? F : lv.feats, L = lv.n;
  // the output gradient level-major, so that each level's pass reads it sequentially
  float* __restrict__ go = scratch(static_cast<size_t>(n) * L * feats);
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += 64)
    for (int l = 0; l < L; ++l)
      for (int64_t i = i0; i < std::min(n, i0 + 64); ++i)
        for (int f = 0; f < feats; ++f)
          go[(l * n + i) * feats + f] = go_points[(i * L + l) * feats + f];
#pragma omp parallel
  {
    auto block = std::make_unique<Block>();
#pragma omp for schedule(dynamic, 1)
    for (int l = L - 1; l >= 0; --l) {      // the large levels first, for a balanced tail
      std::fill(gp + lv.offset[l] * feats, gp + (lv.offset[l] + lv.size[l]) * feats, 0.0f);
      for (int64_t start = 0; start < n; start += kBlock) {
        block->sweep<1>(xp, start, n, l, lv, gp, feats, [&](int i) {
          const float* g = go + (l * n + start + i) * feats;
          for (int c = 0; c < 8; ++c) {
            float* dst = gp + static_cast<int64_t>(block->row[c][i]) * feats;
            const float wc = block->w[c][i];
            for (int f = 0; f < feats; ++f) dst[f] += wc * g[f];
          }
        });
      }
    }
  }
}

template <int F>
void backward_x_impl(const float* __restrict__ xp, const float* __restrict__ go,
                     const float* __restrict__ table, float* __restrict__ gx, int64_t n,
                     const Levels& lv) {
  const int feats = F > 0 ? F : lv.feats, L = lv.n;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    Cell cell;
    float sum[3] = {0.0f, 0.0f, 0.0f};
    for (int l = 0; l < L; ++l) {
      cell_at(xp + 3 * i, l, lv, cell);
      const float* g = go + i * L * feats + l * feats;
      const float* f = cell.frac;
      for (int c = 0; c < 8; ++c) {
        float dot = 0.0f;  // <grad_out, value of corner c>
        const float* v = table + static_cast<int64_t>(cell.row[c]) * feats;
        for (int k = 0; k < feats; ++k) dot += g[k] * v[k];
        const int bit[3] = {(c >> 2) & 1, (c >> 1) & 1, c & 1};
        for (int d = 0; d < 3; ++d) {
          // d w_c / d frac_d: the other two factors, signed by the corner's side in d
          float other = 1.0f;
          for (int e = 0; e < 3; ++e)
            if (e != d) other *= bit[e] ? f[e] : 1.0f - f[e];
          sum[d] += (bit[d] ? 1.0f : -1.0f) * other * dot * lv.scale[l];
        }
      }
    }
    for (int d = 0; d < 3; ++d) gx[3 * i + d] = sum[d];
  }
}

// Runs fn<F> with F the feature count when it is one tiny-cuda-nn supports, else F = 0 (any).
template <template <int> class Fn, typename... Args>
void by_features(int feats, Args&&... args) {
  switch (feats) {
    case 1: Fn<1>::run(args...); break;
    case 2: Fn<2>::run(args...); break;
    case 4: Fn<4>::run(args...); break;
    case 8: Fn<8>::run(args...); break;
    default: Fn<0>::run(args...);
  }
}
template <int F> struct Forward { template <typename... A> static void run(A... a) { forward_impl<F>(a...); } };
template <int F> struct BackTable { template <typename... A> static void run(A... a) { backward_table_impl<F>(a...); } };
template <int F> struct BackX { template <typename... A> static void run(A... a) { backward_x_impl<F>(a...); } };

}  // namespace

torch::Tensor forward(torch::Tensor x, torch::Tensor params, torch::Tensor scale,
                      torch::Tensor res, torch::Tensor size, torch::Tensor offset,
                      int64_t n_dense, int64_t table_size) {
  check(x, params);
  const Levels lv = levels(scale, res, size, offset, n_dense, table_size, params.size(1));
  auto out = torch::empty({x.size(0), lv.n * lv.feats}, x.options());
  std::lock_guard<std::mutex> lock(scratch_mutex());
  by_features<Forward>(lv.feats, x.data_ptr<float>(), params.data_ptr<float>(),
                       out.data_ptr<float>(), x.size(0), lv);
  return out;
}

// Gradients w.r.t. the table and, when asked, w.r.t. the points.
std::vector<torch::Tensor> backward(torch::Tensor grad_out, torch::Tensor x, torch::Tensor params,
                                    torch::Tensor scale, torch::Tensor res, torch::Tensor size,
                                    torch::Tensor offset, int64_t n_dense, int64_t table_size,
                                    bool need_x) {
  check(x, params);
  grad_out = grad_out.contiguous();
  const Levels lv = levels(scale, res, size, offset, n_dense, table_size, params.size(1));
  auto grad_params = torch::empty_like(params);   // zeroed level by level, by its thread
  std::lock_guard<std::mutex> lock(scratch_mutex());
  by_features<BackTable>(lv.feats, x.data_ptr<float>(), grad_out.data_ptr<float>(),
                         grad_params.data_ptr<float>(), x.size(0), lv);
  torch::Tensor grad_x;
  if (need_x) {
    grad_x = torch::empty_like(x);
    by_features<BackX>(lv.feats, x.data_ptr<float>(), grad_out.data_ptr<float>(),
                       params.data_ptr<float>(), grad_x.data_ptr<float>(), x.size(0), lv);
  }
  return {grad_params, grad_x};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "hash-grid encoding forward (CPU)");
  m.def("backward", &backward, "hash-grid encoding backward (CPU)");
}
