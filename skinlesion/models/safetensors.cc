#include "skinlesion/models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/status.h"

namespace skinlesion::models {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble, 8}, {"F32", torch::kFloat, 4},  {"F16", torch::kHalf, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kLong, 8}, {"I32", torch::kInt, 4},
    {"I16", torch::kShort, 2},  {"I8", torch::kChar, 1},    {"U8", torch::kByte, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* FindDtype(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* FindDtype(torch::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

// Unmaps on destruction; shared by the tensors pointing into the mapping.
class Mapping {
 public:
  Mapping(void* data, size_t size) : data_(data), size_(size) {}
  ~Mapping() { munmap(data_, size_); }
  const char* data() const { return static_cast<const char*>(data_); }
  char* mutable_data() { return static_cast<char*>(data_); }
  size_t size() const { return size_; }

 private:
  void* data_;
  size_t size_;
};

std::string ValidNames() {
  std::vector<std::string> names;
  for (const auto& d : kDtypes) names.push_back(d.name);
  return absl::StrJoin(names, " ");
}

// `owner` keeps `data` alive when tensors may alias it (null: always copy).
absl::StatusOr<Safetensors> Parse(const char* data, size_t size, std::shared_ptr<Mapping> owner) {
  if (size < 8) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: file of ", size, " bytes is shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(data[i]);
  if (header_len > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header length ", header_len,
                                                   " exceeds the file (", size - 8, " bytes after it)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header length ", header_len, " above the limit of ", kMaxHeaderBytes));
  }
  const nlohmann::json header =
      nlohmann::json::parse(data + 8, data + 8 + header_len, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return absl::InvalidArgumentError("safetensors: header is not valid JSON");
  if (!header.is_object()) return absl::InvalidArgumentError("safetensors: header is not a JSON object");
  const char* const base = data + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  Safetensors out;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return absl::InvalidArgumentError("safetensors: __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat("safetensors: __metadata__ value of \"", k, "\" is not a string"));
        }
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("safetensors: tensor \"", name, "\": ");
    if (!entry.is_object()) return absl::InvalidArgumentError(where + "entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return absl::InvalidArgumentError(where + "missing string \"dtype\"");
    if (shape_it == entry.end() || !shape_it->is_array()) return absl::InvalidArgumentError(where + "missing array \"shape\"");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(where + "\"data_offsets\" must be two non-negative integers");
    }
    const std::string dtype_name = dtype_it->get<std::string>();
    const DtypeInfo* dtype = FindDtype(dtype_name);
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, "unsupported dtype \"", dtype_name, "\" (supported: ", ValidNames(), ")"));
    }
    if (shape_it->size() > 64) return absl::InvalidArgumentError(where + "more than 64 dimensions");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned()) return absl::InvalidArgumentError(where + "shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 62) || __builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t{1} << 62)) {
        return absl::InvalidArgumentError(where + "shape overflows");
      }
      shape.push_back(static_cast<int64_t>(v));
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return absl::InvalidArgumentError(absl::StrCat(where, "data_offsets [", begin, ", ", end,
                                                     "] outside the data section of ", data_size, " bytes"));
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, dtype->size, &bytes) || bytes != end - begin) {
      return absl::InvalidArgumentError(absl::StrCat(where, dtype_name, " shape [", absl::StrJoin(shape, ", "), "] needs ",
                                                     numel, " x ", dtype->size, " bytes but data_offsets span ", end - begin));
    }
    ranges.push_back({begin, end, name});
    const auto options = torch::TensorOptions().dtype(dtype->type);
    const char* ptr = base + begin;
    torch::Tensor t;
    if (owner != nullptr && bytes > 0 && reinterpret_cast<uintptr_t>(ptr) % dtype->size == 0) {
      t = torch::from_blob(const_cast<char*>(ptr), shape, [owner](void*) {}, options);
    } else {
      t = torch::empty(shape, options);
      if (bytes > 0) std::memcpy(t.data_ptr(), ptr, bytes);
    }
    out.tensors[name] = std::move(t);
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: tensors \"", ranges[i - 1].name, "\" and \"",
                                                     ranges[i].name, "\" overlap"));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<Safetensors> ParseSafetensors(absl::string_view bytes) {
  return Parse(bytes.data(), bytes.size(), nullptr);
}

absl::StatusOr<Safetensors> ReadSafetensors(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": safetensors: file of ", size, " bytes is too short"));
  }
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  if (addr == MAP_FAILED) return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(errno)));
  auto mapping = std::make_shared<Mapping>(addr, size);
  auto parsed = Parse(mapping->data(), size, mapping);
  if (!parsed.ok()) return Annotate(parsed.status(), path);
  return parsed;
}

absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") return absl::InvalidArgumentError("a tensor cannot be named __metadata__");
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" is undefined"));
    const DtypeInfo* dtype = FindDtype(tensor.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has unsupported dtype ",
                                                     c10::toString(tensor.scalar_type())));
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = t.numel() * dtype->size;
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(t));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const auto& t : contiguous) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata) {
  SL_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomically(path, bytes);
}

}  // namespace skinlesion::models
