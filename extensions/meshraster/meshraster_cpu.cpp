// Triangle visibility on the CPU: which triangle each pixel centre sees, the kernel of
// dreamfusion/rendering/mesh_raster.py (triangle_ids is the reference, with the same float32
// expressions in the same order; compiled without fused multiply-adds, so both round alike).
//
// screen (B, V, 4): per vertex (column, row, z/w, valid) in pixel units; faces (F, 3) int32.
// A face is drawn if its three vertices are valid and its doubled signed area
//   a = (x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0)
// is not 0. It covers pixel centre (px, py) of its bounding box [ceil(min), floor(max)] if the
// edge functions e0, e1, e2 all have a's sign (0 included); there its depth is
//   z = (e0 / a) z0 + (e1 / a) z1 + (e2 / a) z2.
// The pixel keeps the smallest z, then the smallest face index. Output: face + 1, 0 for none.
// Rows are split into bands, one band per task: each band walks the faces that reach it in
// face order, so the result does not depend on the thread count.
#include <torch/extension.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

struct Tri {
    float x0, y0, z0, x1, y1, z1, x2, y2, z2, area;
    int64_t c0, c1, r0, r1;    // the pixel-centre bounding box, inclusive
};

bool setup(const float* s, const int32_t* f, int64_t height, int64_t width, Tri* t) {
    const float* v0 = s + 4 * f[0];
    const float* v1 = s + 4 * f[1];
    const float* v2 = s + 4 * f[2];
    if (!(v0[3] > 0 && v1[3] > 0 && v2[3] > 0)) return false;
    t->x0 = v0[0]; t->y0 = v0[1]; t->z0 = v0[2];
    t->x1 = v1[0]; t->y1 = v1[1]; t->z1 = v1[2];
    t->x2 = v2[0]; t->y2 = v2[1]; t->z2 = v2[2];
    t->area = (t->x1 - t->x0) * (t->y2 - t->y0) - (t->x2 - t->x0) * (t->y1 - t->y0);
    if (t->area == 0.0f) return false;
    float lo_x = std::ceil(std::fmin(std::fmin(t->x0, t->x1), t->x2));
    float lo_y = std::ceil(std::fmin(std::fmin(t->y0, t->y1), t->y2));
    float hi_x = std::floor(std::fmax(std::fmax(t->x0, t->x1), t->x2));
    float hi_y = std::floor(std::fmax(std::fmax(t->y0, t->y1), t->y2));
    lo_x = std::fmax(lo_x, 0.0f);
    lo_y = std::fmax(lo_y, 0.0f);
    hi_x = std::fmin(hi_x, float(width - 1));
    hi_y = std::fmin(hi_y, float(height - 1));
    if (!(lo_x <= hi_x && lo_y <= hi_y)) return false;
    t->c0 = int64_t(lo_x); t->c1 = int64_t(hi_x);
    t->r0 = int64_t(lo_y); t->r1 = int64_t(hi_y);
    return true;
}

void draw(const Tri& t, int64_t face, int64_t r_begin, int64_t r_end, int64_t width,
          float* depth, int64_t* best) {
    const int64_t r0 = std::max(t.r0, r_begin), r1 = std::min(t.r1, r_end - 1);
    const bool positive = t.area > 0;
    for (int64_t r = r0; r <= r1; ++r) {
        const float py = float(r);
        for (int64_t c = t.c0; c <= t.c1; ++c) {
            const float px = float(c);
            const float e0 = (t.x2 - t.x1) * (py - t.y1) - (t.y2 - t.y1) * (px - t.x1);
            const float e1 = (t.x0 - t.x2) * (py - t.y2) - (t.y0 - t.y2) * (px - t.x2);
            const float e2 = (t.x1 - t.x0) * (py - t.y0) - (t.y1 - t.y0) * (px - t.x0);
            const bool inside = positive ? (e0 >= 0 && e1 >= 0 && e2 >= 0)
                                         : (e0 <= 0 && e1 <= 0 && e2 <= 0);
            if (!inside) continue;
            const float b0 = e0 / t.area, b1 = e1 / t.area, b2 = e2 / t.area;
            const float z = b0 * t.z0 + b1 * t.z1 + b2 * t.z2;
            const int64_t p = r * width + c;
            if (z < depth[p] || (z == depth[p] && face < best[p])) {
                depth[p] = z;
                best[p] = face;
            }
        }
    }
}

// Each band's faces in face order (a counting sort): band k's are members[start[k] ..
// start[k + 1]). A band then visits only the faces that reach it: with 100k faces, walking
// all of them for every band cost more than drawing them.
std::vector<int64_t> band_members(const std::vector<Tri>& tris, const std::vector<char>& drawn,
                                  int64_t band, int64_t bands, std::vector<int64_t>* start) {
    const int64_t n_faces = int64_t(tris.size());
    start->assign(bands + 1, 0);
    for (int64_t i = 0; i < n_faces; ++i)
        if (drawn[i])
            for (int64_t k = tris[i].r0 / band; k <= tris[i].r1 / band; ++k) ++(*start)[k + 1];
    for (int64_t k = 0; k < bands; ++k) (*start)[k + 1] += (*start)[k];
    std::vector<int64_t> members((*start)[bands]), next(start->begin(), start->end() - 1);
    for (int64_t i = 0; i < n_faces; ++i)
        if (drawn[i])
            for (int64_t k = tris[i].r0 / band; k <= tris[i].r1 / band; ++k)
                members[next[k]++] = i;
    return members;
}

}  // namespace

torch::Tensor triangle_ids(torch::Tensor screen, torch::Tensor faces, int64_t height,
                           int64_t width) {
    TORCH_CHECK(screen.dim() == 3 && screen.size(2) == 4, "screen must be (B, V, 4)");
    TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "faces must be (F, 3)");
    TORCH_CHECK(screen.scalar_type() == torch::kFloat32 && faces.scalar_type() == torch::kInt32,
                "screen float32, faces int32");
    const int64_t batch = screen.size(0), n_faces = faces.size(0), n_verts = screen.size(1);
    auto out = torch::zeros({batch, height, width}, torch::kInt32);
    const int32_t* f = faces.data_ptr<int32_t>();
    for (int64_t k = 0; k < 3 * n_faces; ++k)
        TORCH_CHECK(f[k] >= 0 && f[k] < n_verts, "face index out of range");
    const int64_t band = 8, bands = (height + band - 1) / band;
    for (int64_t b = 0; b < batch; ++b) {
        const float* s = screen.data_ptr<float>() + b * n_verts * 4;
        std::vector<Tri> tris(n_faces);
        std::vector<char> drawn(n_faces);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n_faces; ++i) drawn[i] = setup(s, f + 3 * i, height, width, &tris[i]);
        std::vector<int64_t> start;
        const std::vector<int64_t> members = band_members(tris, drawn, band, bands, &start);
        int32_t* o = out.data_ptr<int32_t>() + b * height * width;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t k = 0; k < bands; ++k) {
            const int64_t r_begin = k * band, r_end = std::min(height, r_begin + band);
            const int64_t count = (r_end - r_begin) * width;
            std::vector<float> depth(count, std::numeric_limits<float>::infinity());
            std::vector<int64_t> best(count, -1);
            float* d = depth.data() - r_begin * width;
            int64_t* bb = best.data() - r_begin * width;
            for (int64_t m = start[k]; m < start[k + 1]; ++m)
                draw(tris[members[m]], members[m], r_begin, r_end, width, d, bb);
            for (int64_t p = 0; p < count; ++p)
                o[r_begin * width + p] = int32_t(best[p] + 1);
        }
    }
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("triangle_ids", &triangle_ids, "which triangle each pixel centre sees (face + 1)");
}
