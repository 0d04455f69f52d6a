// Mask clean-up after thresholding: keep the largest connected component, fill holes. Plain BFS
// on io::LabelMap (no torch), so it is cheap to test and to reuse. Not a morphology library.
// All functions are pure over their argument; safe to call concurrently on different maps.
#pragma once

#include <string>
#include <vector>

#include "segicl/io/volume.h"

namespace segicl::infer {

// Keeps only the largest 6-connected component (3D; a 2D map is one slice, so 4-connected) of the
// non-zero voxels; other foreground voxels become 0. Ties keep the component met first in voxel
// order. An empty map stays empty.
void keep_largest_component(io::LabelMap& mask);

// Fills holes slice by slice (2D, 4-connected background) in planes perpendicular to index axis
// `axis` (0 = x, 1 = y, 2 = z of the map's own grid; the segmenter passes the axis it sliced
// along, so holes are filled in the planes the model predicted). A background voxel is a hole
// when its in-plane background region does not touch the plane's border; holes get label 1.
// Per slice rather than 3D because a tube-like organ's lumen is open at its ends in 3D.
// UsageError for axis outside 0..2.
void fill_holes(io::LabelMap& mask, int axis = 2);

// The steps postprocess() knows, in the order messages list them: "largest-cc", "fill-holes".
const std::vector<std::string>& postprocess_steps();
bool is_postprocess_step(const std::string& name);
// The hint for an unknown step, from that list: "use largest-cc and/or fill-holes (comma-separated)".
std::string postprocess_steps_hint();

// UsageError naming the first step that is not one of postprocess_steps() (empty items, as a
// doubled comma leaves, are skipped), and the known ones; lets a caller refuse a bad list before
// doing any work.
void check_postprocess_steps(const std::vector<std::string>& steps);

// Applies named steps in order: "largest-cc", "fill-holes" (in planes across `axis`). UsageError
// as check_postprocess_steps otherwise.
void postprocess(io::LabelMap& mask, const std::vector<std::string>& steps, int axis = 2);

// Number of non-zero voxels.
int64_t count_foreground(const io::LabelMap& mask);

}  // namespace segicl::infer
