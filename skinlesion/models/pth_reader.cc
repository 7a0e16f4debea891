#include "skinlesion/models/pth_reader.h"

#include <cstring>
#include <fstream>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "skinlesion/models/pickle.h"

namespace skinlesion::models {
namespace {

torch::ScalarType ToScalarType(pickle::StorageType type) {
  using pickle::StorageType;
  switch (type) {
    case StorageType::kFloat: return torch::kFloat;
    case StorageType::kDouble: return torch::kDouble;
    case StorageType::kHalf: return torch::kHalf;
    case StorageType::kBFloat16: return torch::kBFloat16;
    case StorageType::kLong: return torch::kLong;
    case StorageType::kInt: return torch::kInt;
    case StorageType::kShort: return torch::kShort;
    case StorageType::kChar: return torch::kChar;
    case StorageType::kByte: return torch::kByte;
    case StorageType::kBool: return torch::kBool;
  }
  return torch::kFloat;
}

absl::StatusOr<TensorMap> ReadArchive(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  if (!reader.hasRecord("data.pkl")) {
    return absl::InvalidArgumentError("archive has no data.pkl (a TorchScript file? use torch.save(state_dict))");
  }
  auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
  const absl::string_view pkl(static_cast<const char*>(pkl_ptr.get()), pkl_size);
  auto refs = pickle::ParseStateDict(pkl);
  if (!refs.ok()) return refs.status();

  std::map<std::string, torch::Tensor> storages;
  TensorMap out;
  for (const auto& [name, ref] : *refs) {
    auto it = storages.find(ref.storage.key);
    if (it == storages.end()) {
      const std::string record = "data/" + ref.storage.key;
      if (ref.storage.key.find('/') != std::string::npos || !reader.hasRecord(record)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": storage record ", record, " missing"));
      }
      auto [ptr, size] = reader.getRecord(record);
      const int64_t elem = pickle::ElementSize(ref.storage.type);
      if (static_cast<uint64_t>(size) != static_cast<uint64_t>(ref.storage.numel) * elem) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": storage ", ref.storage.key, " has ", size,
                                                       " bytes, expected ", ref.storage.numel, " x ", elem));
      }
      torch::Tensor storage = torch::empty({ref.storage.numel}, torch::TensorOptions().dtype(ToScalarType(ref.storage.type)));
      if (size > 0) std::memcpy(storage.data_ptr(), ptr.get(), size);
      it = storages.emplace(ref.storage.key, storage).first;
    }
    out[name] = it->second.as_strided(ref.size, ref.stride, ref.storage_offset);
  }
  return out;
}

}  // namespace

absl::StatusOr<TensorMap> ReadPth(const std::string& path) {
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() != 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": not a zip-format torch.save file (the legacy format of torch < 1.6 is not "
                "supported; re-save with a newer torch)"));
    }
  }
  try {
    auto result = ReadArchive(path);
    if (!result.ok()) {
      return absl::Status(result.status().code(), absl::StrCat(path, ": ", result.status().message()));
    }
    return result;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad torch.save archive: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad torch.save archive: ", e.what()));
  }
}

}  // namespace skinlesion::models
