// Reads the state dict of a PyTorch `torch.save` file (zip format, torch >= 1.6):
// a .pth/.pt/.bin holding a state dict, or a checkpoint dict with one under
// "state_dict", "model_state_dict", "model" or "module".
//
// The pickle is interpreted by the restricted unpickler of pickle.h (nothing is
// executed; unknown globals are errors naming them); storages are read from the
// archive with caffe2::serialize::PyTorchStreamReader. Debian's LibTorch 1.13
// torch::pickle_load turns an OrderedDict into None, hence this reader.
#ifndef SKINLESION_MODELS_PTH_READER_H_
#define SKINLESION_MODELS_PTH_READER_H_

#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/models/classifier.h"

namespace skinlesion::models {

// Tensors are on the CPU with the stored dtype and strides. Bad archives or
// pickles -> InvalidArgument; a missing file -> NotFound.
absl::StatusOr<TensorMap> ReadPth(const std::string& path);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_PTH_READER_H_
