// Slice-level presence check by reverse prediction: is what the model marked on a query plane the
// structure the examples show, or something else it was drawn to? Each plane's predicted mask,
// used as the only example, segments the context images; the Dice of those reverse masks against
// the context's true masks is the plane's agreement. Planes beyond a 3D structure, where an
// in-context model still paints a blob (RESULTS.md: 10-14 CHAOS points), give a blob on some
// other anatomy, whose reverse prediction misses the examples' structure.
// The reverse idea is PANet's prototype alignment (Wang et al., ICCV 2019), used here at test time.
// Not a classifier of its own and not trained: it only reuses the model.
// Measured (RESULTS.md, session 12): with the shipped CPU-trained model it does not work yet. Its
// one-example predictions are too weak and the agreement is flat across planes (0.3-0.5 whether
// the structure is there or not on mscmr_bssfp's val split), so `segicl eval --presence-check`
// moves mean Dice there by at most 0.4 points, never up. Kept for eval, to re-test on a
// GPU-trained model; the segmenter does not use it.
#pragma once

#include <torch/types.h>

#include <string>

#include "segicl/models/segicl_model.h"

namespace segicl::infer {

struct PresenceOptions {
  // A plane is kept when its agreement is at least this fraction of the best plane's in the same
  // query (0 = the check is off). Relative, so it adapts to how well the model does on the task.
  double min_relative_agreement = 0;
  models::SegmentOptions segment;  // DDIM steps, samples, seed of the reverse passes
};

// agreement[s] in [0, 1] for each query plane s: the mean over the K context pairs of the Dice
// between the reverse prediction (plane s with its mask probabilities[s] > 0.5 as the one example,
// no text) and the pair's own mask. 0 for a plane with an empty mask. query_planes [N, C, R, R],
// probabilities [N, R, R], context_images [K, C, R, R], context_masks [K, 1, R, R] with K >= 1.
torch::Tensor reverse_agreement(models::SegICLModelImpl& model, const torch::Tensor& query_planes,
                                const torch::Tensor& probabilities, const torch::Tensor& context_images,
                                const torch::Tensor& context_masks, const PresenceOptions& options);

// probabilities with every plane whose agreement is below min_relative_agreement x the largest
// agreement set to 0 (a copy; the input is unchanged). Unchanged when the check is off or no
// plane agrees at all (nothing to tell the planes apart by).
torch::Tensor drop_absent_planes(const torch::Tensor& probabilities, const torch::Tensor& agreement,
                                 double min_relative_agreement);

}  // namespace segicl::infer
