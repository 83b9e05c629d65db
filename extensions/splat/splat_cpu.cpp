// Alpha compositing of projected 3D Gaussians on the CPU: the forward and backward of
// dreamfusion/gaussians/rasterize.py (pixel_pairs + composite), which is the reference.
//
// Per pixel, the Gaussians whose box covers it, nearest first:
//   power = -0.5 (a dx^2 + c dy^2) - b dx dy,  (dx, dy) = pixel centre - mean2d
//   alpha = min(0.999, o exp(power)); skipped if power > 0 or alpha < 1/255
//   stop before the Gaussian after which T would be <= 1e-4
//   C = sum_i T_i alpha_i v_i,  A = sum_i T_i alpha_i,  T_i = prod_{j<i} (1 - alpha_j)
// One thread, pixels in order: sums are taken in a fixed order, so runs repeat bit for bit.
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

constexpr float kAlphaMax = 0.999f;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr double kTMin = 1e-4;

struct Lists {
    std::vector<int64_t> offsets;   // (P + 1): pixel p's Gaussians are entries [o_p, o_{p+1})
    std::vector<int32_t> gaussians; // nearest first within each pixel
};

// Every pixel of each Gaussian's box [x0, x1] x [y0, y1], visiting Gaussians in depth order.
Lists build_lists(const int32_t* box, const int64_t* order, int64_t n, int64_t height,
                  int64_t width) {
    const int64_t pixels = height * width;
    Lists out;
    out.offsets.assign(pixels + 1, 0);
    for (int64_t k = 0; k < n; ++k) {
        const int32_t* b = box + 4 * order[k];
        if (b[0] > b[1]) continue;
        for (int32_t y = b[2]; y <= b[3]; ++y)
            for (int32_t x = b[0]; x <= b[1]; ++x) out.offsets[y * width + x + 1] += 1;
    }
    for (int64_t p = 0; p < pixels; ++p) out.offsets[p + 1] += out.offsets[p];
    out.gaussians.resize(out.offsets[pixels]);
    std::vector<int64_t> fill(out.offsets.begin(), out.offsets.end() - 1);
    for (int64_t k = 0; k < n; ++k) {
        const int64_t g = order[k];
        const int32_t* b = box + 4 * g;
        if (b[0] > b[1]) continue;
        for (int32_t y = b[2]; y <= b[3]; ++y)
            for (int32_t x = b[0]; x <= b[1]; ++x)
                out.gaussians[fill[y * width + x]++] = static_cast<int32_t>(g);
    }
    return out;
}

struct Term {
    float alpha, power, dx, dy;
    bool clamped;
};

// The alpha of Gaussian g at pixel (x, y), or false where the rules skip it.
inline bool term(const float* mean, const float* conic, const float* opac, int64_t g, int64_t x,
                 int64_t y, Term* t) {
    t->dx = (static_cast<float>(x) + 0.5f) - mean[2 * g];
    t->dy = (static_cast<float>(y) + 0.5f) - mean[2 * g + 1];
    const float a = conic[3 * g], b = conic[3 * g + 1], c = conic[3 * g + 2];
    t->power = -0.5f * (a * t->dx * t->dx + c * t->dy * t->dy) - b * t->dx * t->dy;
    if (t->power > 0.0f) return false;
    const float raw = opac[g] * std::exp(t->power);
    t->clamped = raw > kAlphaMax;
    t->alpha = t->clamped ? kAlphaMax : raw;
    return t->alpha >= kAlphaMin;
}

}  // namespace

// colour (P, C), alpha (P,), the per-pixel lists (offsets, gaussians) and the pair count.
std::vector<torch::Tensor> forward(torch::Tensor mean2d, torch::Tensor conic,
                                   torch::Tensor opacity, torch::Tensor values,
                                   torch::Tensor box, torch::Tensor order, int64_t height,
                                   int64_t width) {
    const int64_t n = mean2d.size(0), channels = values.size(1), pixels = height * width;
    Lists lists = build_lists(box.data_ptr<int32_t>(), order.data_ptr<int64_t>(), n, height,
                              width);
    auto colour = torch::zeros({pixels, channels}, values.options());
    auto alpha = torch::zeros({pixels}, values.options());
    const float *m = mean2d.data_ptr<float>(), *q = conic.data_ptr<float>(),
                *o = opacity.data_ptr<float>(), *v = values.data_ptr<float>();
    float *out = colour.data_ptr<float>(), *acc = alpha.data_ptr<float>();
    int64_t used = 0;
    for (int64_t p = 0; p < pixels; ++p) {
        const int64_t x = p % width, y = p / width;
        double t_now = 1.0;
        for (int64_t e = lists.offsets[p]; e < lists.offsets[p + 1]; ++e) {
            const int64_t g = lists.gaussians[e];
            Term t;
            if (!term(m, q, o, g, x, y, &t)) continue;
            if (t_now * (1.0 - t.alpha) <= kTMin) break;
            const double w = t_now * t.alpha;
            for (int64_t k = 0; k < channels; ++k) out[p * channels + k] += w * v[g * channels + k];
            acc[p] += w;
            t_now *= 1.0 - t.alpha;
            ++used;
        }
    }
    auto offsets = torch::from_blob(lists.offsets.data(), {pixels + 1}, torch::kInt64).clone();
    auto gaussians = torch::from_blob(lists.gaussians.data(),
                                      {static_cast<int64_t>(lists.gaussians.size())},
                                      torch::kInt32).clone();
    return {colour, alpha, offsets, gaussians, torch::tensor(used)};
}

// Gradients of mean2d (N, 2), conic (N, 3), opacity (N,) and values (N, C), walking each
// pixel's Gaussians back from the last one composited.
std::vector<torch::Tensor> backward(torch::Tensor grad_colour, torch::Tensor grad_alpha,
                                    torch::Tensor mean2d, torch::Tensor conic,
                                    torch::Tensor opacity, torch::Tensor values,
                                    torch::Tensor offsets, torch::Tensor gaussians,
                                    int64_t height, int64_t width) {
    const int64_t n = mean2d.size(0), channels = values.size(1), pixels = height * width;
    auto g_mean = torch::zeros_like(mean2d), g_conic = torch::zeros_like(conic);
    auto g_opac = torch::zeros_like(opacity), g_values = torch::zeros_like(values);
    const float *m = mean2d.data_ptr<float>(), *q = conic.data_ptr<float>(),
                *o = opacity.data_ptr<float>(), *v = values.data_ptr<float>();
    const float *gc = grad_colour.data_ptr<float>(), *ga = grad_alpha.data_ptr<float>();
    float *dm = g_mean.data_ptr<float>(), *dq = g_conic.data_ptr<float>(),
          *dopac = g_opac.data_ptr<float>(), *dv = g_values.data_ptr<float>();
    const int64_t* off = offsets.data_ptr<int64_t>();
    const int32_t* list = gaussians.data_ptr<int32_t>();
    std::vector<Term> terms;
    std::vector<int32_t> ids;
    std::vector<double> trans;
    std::vector<double> behind(channels);
    (void)n;
    for (int64_t p = 0; p < pixels; ++p) {
        const int64_t x = p % width, y = p / width;
        terms.clear();
        ids.clear();
        trans.clear();
        double t_now = 1.0;
        for (int64_t e = off[p]; e < off[p + 1]; ++e) {
            const int32_t g = list[e];
            Term t;
            if (!term(m, q, o, g, x, y, &t)) continue;
            if (t_now * (1.0 - t.alpha) <= kTMin) break;
            terms.push_back(t);
            ids.push_back(g);
            trans.push_back(t_now);
            t_now *= 1.0 - t.alpha;
        }
        // what lies behind Gaussian i, seen through it: sum_{j>i} (T_j / T_{i+1}) alpha_j v_j
        std::fill(behind.begin(), behind.end(), 0.0);
        double behind_alpha = 0.0;
        for (int64_t i = static_cast<int64_t>(ids.size()) - 1; i >= 0; --i) {
            const Term& t = terms[i];
            const int64_t g = ids[i];
            const double w = trans[i] * t.alpha;
            double d_alpha = 0.0;
            for (int64_t k = 0; k < channels; ++k) {
                const double gk = gc[p * channels + k];
                dv[g * channels + k] += static_cast<float>(w * gk);
                d_alpha += trans[i] * (v[g * channels + k] - behind[k]) * gk;
                behind[k] = t.alpha * v[g * channels + k] + (1.0 - t.alpha) * behind[k];
            }
            d_alpha += trans[i] * (1.0 - behind_alpha) * ga[p];
            behind_alpha = t.alpha + (1.0 - t.alpha) * behind_alpha;
            if (t.clamped) continue;            // alpha = 0.999 there: no gradient
            const double gauss = std::exp(static_cast<double>(t.power));
            dopac[g] += static_cast<float>(d_alpha * gauss);
            const double d_power = d_alpha * t.alpha;
            const float a = q[3 * g], b = q[3 * g + 1], c = q[3 * g + 2];
            // power = -0.5 (a dx^2 + c dy^2) - b dx dy, dx = u - mean_x, dy = v - mean_y
            dm[2 * g] += static_cast<float>(d_power * (a * t.dx + b * t.dy));
            dm[2 * g + 1] += static_cast<float>(d_power * (c * t.dy + b * t.dx));
            dq[3 * g] += static_cast<float>(d_power * -0.5 * t.dx * t.dx);
            dq[3 * g + 1] += static_cast<float>(d_power * -t.dx * t.dy);
            dq[3 * g + 2] += static_cast<float>(d_power * -0.5 * t.dy * t.dy);
        }
    }
    return {g_mean, g_conic, g_opac, g_values};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "composite projected Gaussians (CPU)");
    m.def("backward", &backward, "gradients of the composite (CPU)");
}
