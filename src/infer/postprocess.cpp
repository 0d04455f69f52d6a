// Largest-component and hole-filling clean-up by breadth-first search (see postprocess.h).
#include "segicl/infer/postprocess.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>

#include "segicl/core/error.h"

namespace segicl::infer {

void keep_largest_component(io::LabelMap& mask) {
  const int64_t nx = mask.size[0], ny = mask.size[1], nz = mask.size[2];
  const int64_t n = nx * ny * nz;
  if (static_cast<int64_t>(mask.labels.size()) != n)
    SEGICL_THROW(ShapeError, "label buffer does not match the map's size", "", "");
  std::vector<int32_t> component(n, 0);
  std::vector<int64_t> sizes{0};  // sizes[c] for component id c >= 1
  std::vector<int64_t> queue;
  const std::array<int64_t, 6> dx{1, -1, 0, 0, 0, 0}, dy{0, 0, 1, -1, 0, 0}, dz{0, 0, 0, 0, 1, -1};
  for (int64_t start = 0; start < n; ++start) {
    if (mask.labels[start] == 0 || component[start] != 0) continue;
    const auto id = static_cast<int32_t>(sizes.size());
    int64_t size = 0;
    queue.assign(1, start);
    component[start] = id;
    while (!queue.empty()) {
      const int64_t v = queue.back();
      queue.pop_back();
      ++size;
      const int64_t x = v % nx, y = (v / nx) % ny, z = v / (nx * ny);
      for (int d = 0; d < 6; ++d) {
        const int64_t x2 = x + dx[d], y2 = y + dy[d], z2 = z + dz[d];
        if (x2 < 0 || y2 < 0 || z2 < 0 || x2 >= nx || y2 >= ny || z2 >= nz) continue;
        const int64_t w = (z2 * ny + y2) * nx + x2;
        if (mask.labels[w] == 0 || component[w] != 0) continue;
        component[w] = id;
        queue.push_back(w);
      }
    }
    sizes.push_back(size);
  }
  if (sizes.size() <= 2) return;  // zero or one component
  int32_t best = 1;
  for (size_t c = 2; c < sizes.size(); ++c)
    if (sizes[c] > sizes[best]) best = static_cast<int32_t>(c);
  for (int64_t v = 0; v < n; ++v)
    if (component[v] != best) mask.labels[v] = 0;
}

void fill_holes(io::LabelMap& mask, int axis) {
  if (axis < 0 || axis > 2) SEGICL_THROW(UsageError, "fill_holes axis must be 0, 1 or 2", "", "");
  const std::array<int64_t, 3> size = mask.size;
  if (static_cast<int64_t>(mask.labels.size()) != size[0] * size[1] * size[2])
    SEGICL_THROW(ShapeError, "label buffer does not match the map's size", "", "");
  // In-plane axes u, v (index axes other than `axis`).
  const int u_axis = axis == 0 ? 1 : 0, v_axis = axis == 2 ? 1 : 2;
  const int64_t nu = size[u_axis], nv = size[v_axis];
  std::vector<uint8_t> outside(nu * nv);
  std::vector<int64_t> queue;
  for (int64_t s = 0; s < size[axis]; ++s) {
    auto index = [&](int64_t u, int64_t v) {
      std::array<int64_t, 3> p{};
      p[axis] = s;
      p[u_axis] = u;
      p[v_axis] = v;
      return (p[2] * size[1] + p[1]) * size[0] + p[0];
    };
    std::fill(outside.begin(), outside.end(), 0);
    queue.clear();
    auto seed = [&](int64_t u, int64_t v) {
      if (mask.labels[index(u, v)] == 0 && !outside[v * nu + u]) {
        outside[v * nu + u] = 1;
        queue.push_back(v * nu + u);
      }
    };
    for (int64_t u = 0; u < nu; ++u) seed(u, 0), seed(u, nv - 1);
    for (int64_t v = 0; v < nv; ++v) seed(0, v), seed(nu - 1, v);
    while (!queue.empty()) {
      const int64_t p = queue.back();
      queue.pop_back();
      const int64_t u = p % nu, v = p / nu;
      if (u > 0) seed(u - 1, v);
      if (u + 1 < nu) seed(u + 1, v);
      if (v > 0) seed(u, v - 1);
      if (v + 1 < nv) seed(u, v + 1);
    }
    for (int64_t v = 0; v < nv; ++v)
      for (int64_t u = 0; u < nu; ++u) {
        auto& label = mask.labels[index(u, v)];
        if (label == 0 && !outside[v * nu + u]) label = 1;
      }
  }
}

const std::vector<std::string>& postprocess_steps() {
  static const std::vector<std::string> names{"largest-cc", "fill-holes"};
  return names;
}

bool is_postprocess_step(const std::string& name) {
  const auto& names = postprocess_steps();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string postprocess_steps_hint() {
  const auto& names = postprocess_steps();
  std::string hint = "use " + names.front();
  for (size_t i = 1; i < names.size(); ++i) hint += (i + 1 == names.size() ? " and/or " : ", ") + names[i];
  return hint + " (comma-separated)";
}

void check_postprocess_steps(const std::vector<std::string>& steps) {
  for (const auto& step : steps)
    if (!step.empty() && !is_postprocess_step(step))
      SEGICL_THROW(UsageError, "unknown post-processing step '" + step + "'", "", postprocess_steps_hint());
}

void postprocess(io::LabelMap& mask, const std::vector<std::string>& steps, int axis) {
  check_postprocess_steps(steps);
  for (const auto& step : steps) {
    if (step == "largest-cc") keep_largest_component(mask);
    if (step == "fill-holes") fill_holes(mask, axis);
  }
}

int64_t count_foreground(const io::LabelMap& mask) {
  int64_t n = 0;
  for (auto label : mask.labels) n += label != 0;
  return n;
}

}  // namespace segicl::infer
