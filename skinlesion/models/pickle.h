// A restricted unpickler for the data.pkl of torch.save archives.
//
// Torch-free, so it can be fuzzed on its own. It interprets only the opcodes
// torch.save emits (protocols 2-5: PROTO, FRAME, MARK, EMPTY_DICT/LIST/TUPLE,
// TUPLE1-3, TUPLE, LIST, DICT, APPEND(S), SETITEM(S), BININT*, LONG1, BINFLOAT,
// NONE, NEWTRUE/NEWFALSE, (SHORT_)BINUNICODE(8), (SHORT_)BINBYTES, BINPUT,
// LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET, GLOBAL, STACK_GLOBAL, REDUCE, BUILD,
// BINPERSID, POP, POP_MARK, DUP, STOP) and calls only an allow-list of globals:
//   collections.OrderedDict, torch._utils._rebuild_tensor_v2,
//   torch._utils._rebuild_parameter, torch.<Type>Storage (as storage types).
// Anything else is an InvalidArgument error naming the opcode or global; nothing is
// ever executed. Tensors come out as references to storages in the archive
// (materialised by pth_reader.h).
#ifndef SKINLESION_MODELS_PICKLE_H_
#define SKINLESION_MODELS_PICKLE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion::pickle {

enum class StorageType { kFloat, kDouble, kHalf, kBFloat16, kLong, kInt, kShort, kChar, kByte, kBool };

// Bytes per element of a storage type.
int ElementSize(StorageType type);
const char* StorageTypeName(StorageType type);  // "FloatStorage", ...

struct StorageRef {
  std::string key;        // Record "data/<key>" in the archive.
  StorageType type = StorageType::kFloat;
  std::string location;   // "cpu", "cuda:0", ...
  int64_t numel = 0;      // Elements in the storage.
};

struct TensorRef {
  StorageRef storage;
  int64_t storage_offset = 0;  // In elements.
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
  bool requires_grad = false;
};

// The parsed object graph. Values live in `values` and refer to each other by index
// (the graph may share or even cycle through mutable containers).
struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;        // kBool, kInt
  double f = 0;         // kFloat
  std::string s;        // kString, kBytes; kGlobal: "module.name"
  std::vector<int> items;  // kTuple, kList; kDict: key0, value0, key1, value1, ...
  StorageRef storage;   // kStorage
  TensorRef tensor;     // kTensor
};

struct Document {
  std::vector<Value> values;
  int root = -1;
};

struct ParseOptions {
  // Upper bound on the number of values created (defends against blow-ups).
  size_t max_values = size_t{1} << 24;
};

absl::StatusOr<Document> Parse(absl::string_view bytes, const ParseOptions& options = {});

// Finds the state dict in a parsed torch.save payload: the root when it is a dict of
// tensors, else the dict under "state_dict", "model_state_dict", "model" or
// "module" of a root dict. Checks each tensor's strides stay inside its storage.
absl::StatusOr<std::map<std::string, TensorRef>> ExtractStateDict(const Document& document);

// Parse + ExtractStateDict.
absl::StatusOr<std::map<std::string, TensorRef>> ParseStateDict(absl::string_view data_pkl);

}  // namespace skinlesion::pickle

#endif  // SKINLESION_MODELS_PICKLE_H_
