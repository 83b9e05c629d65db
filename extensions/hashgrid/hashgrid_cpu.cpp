// Multi-resolution hash-grid encoding on the CPU (OpenMP), forward and backward.
// The same layout and arithmetic as dreamfusion/nerf/hashgrid.py (tiny-cuda-nn's): see there.
#include <torch/extension.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int64_t kMaxLevels = 32;
constexpr int64_t kMaxFeatures = 16;

struct Levels {
  const float* scale;
  const int64_t* res;
  const int64_t* size;
  const int64_t* offset;
  int64_t n_dense;
  int64_t table_mask;
};

// Table rows of the 8 corners of x's cell at level l (corner c = 4 ix + 2 iy + iz), the
// fractional position and the cell's trilinear weights.
inline void corners(const float* x, int64_t l, const Levels& lv, int64_t rows[8], float frac[3],
                    float w[8]) {
  int64_t cell[3];
  for (int d = 0; d < 3; ++d) {
    const float p = x[d] * lv.scale[l] + 0.5f;
    const float f = std::floor(p);
    cell[d] = static_cast<int64_t>(f);
    frac[d] = p - f;
  }
  for (int c = 0; c < 8; ++c) {
    const int64_t e0 = cell[0] + ((c >> 2) & 1), e1 = cell[1] + ((c >> 1) & 1),
                  e2 = cell[2] + (c & 1);
    int64_t row;
    if (l < lv.n_dense) {
      const int64_t r = lv.res[l];
      const int64_t v = e0 + e1 * r + e2 * r * r;
      row = ((v % lv.size[l]) + lv.size[l]) % lv.size[l];
    } else {
      const uint32_t h = static_cast<uint32_t>(e0) ^ (static_cast<uint32_t>(e1) * kPrime1) ^
                         (static_cast<uint32_t>(e2) * kPrime2);
      row = static_cast<int64_t>(h) & lv.table_mask;
    }
    rows[c] = row + lv.offset[l];
    const float wx = (c >> 2) & 1 ? frac[0] : 1.0f - frac[0];
    const float wy = (c >> 1) & 1 ? frac[1] : 1.0f - frac[1];
    const float wz = c & 1 ? frac[2] : 1.0f - frac[2];
    w[c] = wx * wy * wz;
  }
}

Levels levels(const torch::Tensor& scale, const torch::Tensor& res, const torch::Tensor& size,
              const torch::Tensor& offset, int64_t n_dense, int64_t table_size) {
  return {scale.data_ptr<float>(), res.data_ptr<int64_t>(), size.data_ptr<int64_t>(),
          offset.data_ptr<int64_t>(), n_dense, table_size - 1};
}

void check(const torch::Tensor& x, const torch::Tensor& params) {
  TORCH_CHECK(x.device().is_cpu() && params.device().is_cpu(), "hashgrid_cpu: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && params.scalar_type() == torch::kFloat32,
              "hashgrid_cpu: float32 only");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.is_contiguous(), "x must be (N, 3), contiguous");
  TORCH_CHECK(params.dim() == 2 && params.is_contiguous(), "params must be (T, F), contiguous");
}

}  // namespace

torch::Tensor forward(torch::Tensor x, torch::Tensor params, torch::Tensor scale,
                      torch::Tensor res, torch::Tensor size, torch::Tensor offset,
                      int64_t n_dense, int64_t table_size) {
  check(x, params);
  const int64_t n = x.size(0), n_levels = scale.size(0), feats = params.size(1);
  TORCH_CHECK(n_levels <= kMaxLevels, "hashgrid_cpu: at most 32 levels");
  auto out = torch::empty({n, n_levels * feats}, x.options());
  const Levels lv = levels(scale, res, size, offset, n_dense, table_size);
  const float* __restrict__ xp = x.data_ptr<float>();
  const float* __restrict__ table = params.data_ptr<float>();
  float* __restrict__ op = out.data_ptr<float>();
  TORCH_CHECK(feats <= kMaxFeatures, "hashgrid_cpu: at most 16 features per level");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    // all levels' corner rows first, then the loads: independent loads overlap in flight,
    // which is what a latency-bound gather needs
    int64_t rows[kMaxLevels][8];
    float w[kMaxLevels][8];
    float frac[3];
    for (int64_t l = 0; l < n_levels; ++l) corners(xp + 3 * i, l, lv, rows[l], frac, w[l]);
    for (int64_t l = 0; l < n_levels; ++l) {
      float acc[kMaxFeatures] = {0.0f};
      for (int c = 0; c < 8; ++c) {
        const float* v = table + rows[l][c] * feats;
        for (int64_t f = 0; f < feats; ++f) acc[f] += w[l][c] * v[f];
      }
      float* o = op + i * n_levels * feats + l * feats;
      for (int64_t f = 0; f < feats; ++f) o[f] = acc[f];
    }
  }
  return out;
}

// Gradients w.r.t. the table (levels own disjoint rows, so each level is one thread's: no
// atomics) and, when asked, w.r.t. the points.
std::vector<torch::Tensor> backward(torch::Tensor grad_out, torch::Tensor x, torch::Tensor params,
                                    torch::Tensor scale, torch::Tensor res, torch::Tensor size,
                                    torch::Tensor offset, int64_t n_dense, int64_t table_size,
                                    bool need_x) {
  check(x, params);
  grad_out = grad_out.contiguous();
  const int64_t n = x.size(0), n_levels = scale.size(0), feats = params.size(1);
  auto grad_params = torch::zeros_like(params);
  const Levels lv = levels(scale, res, size, offset, n_dense, table_size);
  const float* xp = x.data_ptr<float>();
  const float* go = grad_out.data_ptr<float>();
  float* gp = grad_params.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < n_levels; ++l) {
    // a block of points' rows first, then their read-modify-writes, to keep loads in flight
    constexpr int64_t kBlock = 16;
    int64_t rows[kBlock][8];
    float w[kBlock][8];
    float frac[3];
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t count = std::min(kBlock, n - start);
      for (int64_t b = 0; b < count; ++b) corners(xp + 3 * (start + b), l, lv, rows[b], frac, w[b]);
      for (int64_t b = 0; b < count; ++b) {
        const float* g = go + (start + b) * n_levels * feats + l * feats;
        for (int c = 0; c < 8; ++c) {
          float* dst = gp + rows[b][c] * feats;
          for (int64_t f = 0; f < feats; ++f) dst[f] += w[b][c] * g[f];
        }
      }
    }
  }
  torch::Tensor grad_x;
  if (need_x) {
    grad_x = torch::zeros_like(x);
    const float* table = params.data_ptr<float>();
    float* gx = grad_x.data_ptr<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t rows[8];
      float frac[3], w[8];
      for (int64_t l = 0; l < n_levels; ++l) {
        corners(xp + 3 * i, l, lv, rows, frac, w);
        const float* g = go + i * n_levels * feats + l * feats;
        for (int c = 0; c < 8; ++c) {
          float dot = 0.0f;  // <grad_out, value of corner c>
          const float* v = table + rows[c] * feats;
          for (int64_t f = 0; f < feats; ++f) dot += g[f] * v[f];
          const int bit[3] = {(c >> 2) & 1, (c >> 1) & 1, c & 1};
          for (int d = 0; d < 3; ++d) {
            // d w_c / d frac_d: the other two factors, signed by the corner's side in d
            float other = 1.0f;
            for (int e = 0; e < 3; ++e)
              if (e != d) other *= bit[e] ? frac[e] : 1.0f - frac[e];
            gx[3 * i + d] += (bit[d] ? 1.0f : -1.0f) * other * dot * lv.scale[l];
          }
        }
      }
    }
  }
  return {grad_params, grad_x};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "hash-grid encoding forward (CPU)");
  m.def("backward", &backward, "hash-grid encoding backward (CPU)");
}
