#include "skinlesion/models/pickle.h"

#include <cstring>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace skinlesion::pickle {
namespace {

using Kind = Value::Kind;

struct StorageName {
  const char* name;
  StorageType type;
  int size;
};
constexpr StorageName kStorages[] = {
    {"FloatStorage", StorageType::kFloat, 4},       {"DoubleStorage", StorageType::kDouble, 8},
    {"HalfStorage", StorageType::kHalf, 2},         {"BFloat16Storage", StorageType::kBFloat16, 2},
    {"LongStorage", StorageType::kLong, 8},         {"IntStorage", StorageType::kInt, 4},
    {"ShortStorage", StorageType::kShort, 2},       {"CharStorage", StorageType::kChar, 1},
    {"ByteStorage", StorageType::kByte, 1},         {"BoolStorage", StorageType::kBool, 1},
};

const StorageName* FindStorage(absl::string_view global) {
  if (global.substr(0, 6) != "torch.") return nullptr;
  for (const auto& s : kStorages) {
    if (global.substr(6) == s.name) return &s;
  }
  return nullptr;
}

constexpr absl::string_view kOrderedDict = "collections.OrderedDict";
constexpr absl::string_view kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr absl::string_view kRebuildParameter = "torch._utils._rebuild_parameter";

bool AllowedGlobal(absl::string_view g) {
  return g == kOrderedDict || g == kRebuildTensorV2 || g == kRebuildParameter || FindStorage(g) != nullptr;
}

class Unpickler {
 public:
  Unpickler(absl::string_view bytes, const ParseOptions& options) : in_(bytes), options_(options) {}

  absl::StatusOr<Document> Run() {
    while (true) {
      if (pos_ >= in_.size()) return Error("truncated: no STOP opcode");
      const size_t op_pos = pos_;
      const auto op = static_cast<unsigned char>(in_[pos_++]);
      absl::Status status = Step(op);
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("pickle: %s (opcode 0x%02x at offset %d)", status.message(), op, op_pos));
      }
      if (done_) break;
    }
    if (stack_.size() != 1) return Error(absl::StrCat("STOP with ", stack_.size(), " values on the stack"));
    doc_.root = stack_.back();
    return std::move(doc_);
  }

 private:
  absl::Status Error(absl::string_view message) { return absl::InvalidArgumentError(message); }

  absl::StatusOr<int> New(Value v) {
    if (doc_.values.size() >= options_.max_values) return Error("too many values");
    doc_.values.push_back(std::move(v));
    return static_cast<int>(doc_.values.size() - 1);
  }
  absl::StatusOr<int> NewKind(Kind kind) {
    Value v;
    v.kind = kind;
    return New(std::move(v));
  }

  absl::Status Read(size_t n, absl::string_view* out) {
    if (n > in_.size() - pos_) return Error(absl::StrCat("truncated: needs ", n, " more bytes"));
    *out = in_.substr(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> ReadLE(size_t n) {
    absl::string_view b;
    absl::Status s = Read(n, &b);
    if (!s.ok()) return s;
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[i]);
    return v;
  }
  absl::StatusOr<std::string> ReadLine() {
    const size_t nl = in_.find('\n', pos_);
    if (nl == absl::string_view::npos) return Error("truncated: GLOBAL without newline");
    std::string line(in_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return line;
  }

  absl::StatusOr<int> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
    const int v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<int> Top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
    return stack_.back();
  }
  // Pops everything above the last MARK, and the mark.
  absl::StatusOr<std::vector<int>> PopMark() {
    if (marks_.empty()) return Error("no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<int> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  absl::Status Push(absl::StatusOr<int> v) {
    if (!v.ok()) return v.status();
    stack_.push_back(*v);
    return absl::OkStatus();
  }
  absl::Status PushTuple(std::vector<int> items) {
    Value v;
    v.kind = Kind::kTuple;
    v.items = std::move(items);
    return Push(New(std::move(v)));
  }
  absl::Status PushString(Kind kind, size_t n) {
    absl::string_view b;
    absl::Status s = Read(n, &b);
    if (!s.ok()) return s;
    Value v;
    v.kind = kind;
    v.s = std::string(b);
    return Push(New(std::move(v)));
  }
  absl::Status PushInt(int64_t i) {
    Value v;
    v.kind = Kind::kInt;
    v.i = i;
    return Push(New(std::move(v)));
  }
  absl::Status PushGlobal(const std::string& module, const std::string& name) {
    const std::string global = absl::StrCat(module, ".", name);
    if (!AllowedGlobal(global)) return Error(absl::StrCat("global \"", global, "\" is not allowed"));
    Value v;
    v.kind = Kind::kGlobal;
    v.s = global;
    return Push(New(std::move(v)));
  }
  absl::Status Memo(uint64_t index) {
    if (stack_.empty()) return Error("memoize on an empty stack");
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Error(absl::StrCat("memo key ", index, " not found"));
    stack_.push_back(it->second);
    return absl::OkStatus();
  }

  absl::Status AppendItems(int list, const std::vector<int>& items) {
    if (doc_.values[list].kind != Kind::kList) return Error("APPEND to a non-list");
    auto& dst = doc_.values[list].items;
    dst.insert(dst.end(), items.begin(), items.end());
    return absl::OkStatus();
  }
  absl::Status SetItems(int dict, const std::vector<int>& kv) {
    if (doc_.values[dict].kind != Kind::kDict) return Error("SETITEM on a non-dict");
    if (kv.size() % 2 != 0) return Error("SETITEMS with an odd number of values");
    auto& dst = doc_.values[dict].items;
    dst.insert(dst.end(), kv.begin(), kv.end());
    return absl::OkStatus();
  }

  const Value& At(int i) const { return doc_.values[i]; }

  absl::StatusOr<int64_t> IntArg(int v, absl::string_view what) {
    if (At(v).kind != Kind::kInt && At(v).kind != Kind::kBool) return Error(absl::StrCat(what, " is not an int"));
    return At(v).i;
  }
  absl::StatusOr<std::vector<int64_t>> IntTuple(int v, absl::string_view what) {
    if (At(v).kind != Kind::kTuple && At(v).kind != Kind::kList) return Error(absl::StrCat(what, " is not a tuple"));
    std::vector<int64_t> out;
    for (int item : At(v).items) {
      if (At(item).kind != Kind::kInt) return Error(absl::StrCat(what, " has a non-int entry"));
      out.push_back(At(item).i);
    }
    return out;
  }

  absl::Status Reduce() {
    auto args = Pop();
    if (!args.ok()) return args.status();
    auto callable = Pop();
    if (!callable.ok()) return callable.status();
    if (At(*callable).kind != Kind::kGlobal) return Error("REDUCE of a non-global");
    if (At(*args).kind != Kind::kTuple) return Error("REDUCE arguments are not a tuple");
    const std::string g = At(*callable).s;
    const std::vector<int> a = At(*args).items;
    if (g == kOrderedDict) {
      if (!a.empty()) return Error("OrderedDict with arguments");
      return Push(NewKind(Kind::kDict));
    }
    if (g == kRebuildTensorV2) {
      if (a.size() != 6 && a.size() != 7) return Error("_rebuild_tensor_v2 needs 6 or 7 arguments");
      if (At(a[0]).kind != Kind::kStorage) return Error("_rebuild_tensor_v2: first argument is not a storage");
      Value v;
      v.kind = Kind::kTensor;
      v.tensor.storage = At(a[0]).storage;
      auto offset = IntArg(a[1], "storage offset");
      if (!offset.ok()) return offset.status();
      auto size = IntTuple(a[2], "size");
      if (!size.ok()) return size.status();
      auto stride = IntTuple(a[3], "stride");
      if (!stride.ok()) return stride.status();
      auto requires_grad = IntArg(a[4], "requires_grad");
      if (!requires_grad.ok()) return requires_grad.status();
      v.tensor.storage_offset = *offset;
      v.tensor.size = std::move(*size);
      v.tensor.stride = std::move(*stride);
      v.tensor.requires_grad = *requires_grad != 0;
      return Push(New(std::move(v)));
    }
    if (g == kRebuildParameter) {
      if (a.size() != 3) return Error("_rebuild_parameter needs 3 arguments");
      if (At(a[0]).kind != Kind::kTensor) return Error("_rebuild_parameter: first argument is not a tensor");
      Value v = At(a[0]);
      auto requires_grad = IntArg(a[1], "requires_grad");
      if (!requires_grad.ok()) return requires_grad.status();
      v.tensor.requires_grad = *requires_grad != 0;
      return Push(New(std::move(v)));
    }
    return Error(absl::StrCat("global \"", g, "\" cannot be called"));
  }

  absl::Status PersistentLoad() {
    auto pid = Pop();
    if (!pid.ok()) return pid.status();
    const Value& t = At(*pid);
    if (t.kind != Kind::kTuple || t.items.size() != 5) return Error("persistent id is not a 5-tuple");
    const auto& it = t.items;
    if (At(it[0]).kind != Kind::kString || At(it[0]).s != "storage") return Error("persistent id is not a storage");
    if (At(it[1]).kind != Kind::kGlobal) return Error("storage type is not a global");
    const StorageName* type = FindStorage(At(it[1]).s);
    if (type == nullptr) return Error(absl::StrCat("unsupported storage type \"", At(it[1]).s, "\""));
    if (At(it[2]).kind != Kind::kString) return Error("storage key is not a string");
    if (At(it[3]).kind != Kind::kString) return Error("storage location is not a string");
    if (At(it[4]).kind != Kind::kInt || At(it[4]).i < 0) return Error("storage size is not a non-negative int");
    Value v;
    v.kind = Kind::kStorage;
    v.storage.key = At(it[2]).s;
    v.storage.type = type->type;
    v.storage.location = At(it[3]).s;
    v.storage.numel = At(it[4]).i;
    return Push(New(std::move(v)));
  }

  absl::Status Step(unsigned char op) {
    switch (op) {
      case 0x80: {  // PROTO
        auto v = ReadLE(1);
        if (!v.ok()) return v.status();
        if (*v < 2 || *v > 5) return Error(absl::StrCat("unsupported pickle protocol ", *v));
        return absl::OkStatus();
      }
      case 0x95: return ReadLE(8).status();  // FRAME: the length is advisory.
      case '.': done_ = true; return absl::OkStatus();  // STOP
      case '(': marks_.push_back(stack_.size()); return absl::OkStatus();  // MARK
      case '}': return Push(NewKind(Kind::kDict));   // EMPTY_DICT
      case ']': return Push(NewKind(Kind::kList));   // EMPTY_LIST
      case ')': return PushTuple({});                // EMPTY_TUPLE
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        std::vector<int> items(n);
        for (size_t i = n; i-- > 0;) {
          auto v = Pop();
          if (!v.ok()) return v.status();
          items[i] = *v;
        }
        return PushTuple(std::move(items));
      }
      case 't': {  // TUPLE
        auto items = PopMark();
        if (!items.ok()) return items.status();
        return PushTuple(std::move(*items));
      }
      case 'l': {  // LIST
        auto items = PopMark();
        if (!items.ok()) return items.status();
        Value v;
        v.kind = Kind::kList;
        v.items = std::move(*items);
        return Push(New(std::move(v)));
      }
      case 'd': {  // DICT
        auto items = PopMark();
        if (!items.ok()) return items.status();
        if (items->size() % 2 != 0) return Error("DICT with an odd number of values");
        Value v;
        v.kind = Kind::kDict;
        v.items = std::move(*items);
        return Push(New(std::move(v)));
      }
      case 'a': {  // APPEND
        auto item = Pop();
        if (!item.ok()) return item.status();
        auto list = Top();
        if (!list.ok()) return list.status();
        return AppendItems(*list, {*item});
      }
      case 'e': {  // APPENDS
        auto items = PopMark();
        if (!items.ok()) return items.status();
        auto list = Top();
        if (!list.ok()) return list.status();
        return AppendItems(*list, *items);
      }
      case 's': {  // SETITEM
        auto value = Pop();
        if (!value.ok()) return value.status();
        auto key = Pop();
        if (!key.ok()) return key.status();
        auto dict = Top();
        if (!dict.ok()) return dict.status();
        return SetItems(*dict, {*key, *value});
      }
      case 'u': {  // SETITEMS
        auto items = PopMark();
        if (!items.ok()) return items.status();
        auto dict = Top();
        if (!dict.ok()) return dict.status();
        return SetItems(*dict, *items);
      }
      case 'J': {  // BININT
        auto v = ReadLE(4);
        if (!v.ok()) return v.status();
        return PushInt(static_cast<int32_t>(static_cast<uint32_t>(*v)));
      }
      case 'K': case 'M': {  // BININT1, BININT2
        auto v = ReadLE(op == 'K' ? 1 : 2);
        if (!v.ok()) return v.status();
        return PushInt(static_cast<int64_t>(*v));
      }
      case 0x8a: {  // LONG1
        auto n = ReadLE(1);
        if (!n.ok()) return n.status();
        if (*n > 8) return Error("LONG1 wider than 64 bits");
        auto v = ReadLE(*n);
        if (!v.ok()) return v.status();
        uint64_t u = *v;
        if (*n > 0 && *n < 8 && (u >> (8 * *n - 1)) & 1) u |= ~uint64_t{0} << (8 * *n);  // sign-extend
        return PushInt(static_cast<int64_t>(u));
      }
      case 'G': {  // BINFLOAT (big-endian)
        absl::string_view b;
        absl::Status s = Read(8, &b);
        if (!s.ok()) return s;
        uint64_t u = 0;
        for (char c : b) u = (u << 8) | static_cast<unsigned char>(c);
        Value v;
        v.kind = Kind::kFloat;
        std::memcpy(&v.f, &u, sizeof(double));
        return Push(New(std::move(v)));
      }
      case 'N': return Push(NewKind(Kind::kNone));
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        Value v;
        v.kind = Kind::kBool;
        v.i = op == 0x88 ? 1 : 0;
        return Push(New(std::move(v)));
      }
      case 'X': case 0x8c: case 0x8d: case 'B': case 'C': {
        // BINUNICODE (4-byte length), SHORT_BINUNICODE (1), BINUNICODE8 (8),
        // BINBYTES (4), SHORT_BINBYTES (1).
        const size_t width = (op == 0x8c || op == 'C') ? 1 : (op == 0x8d ? 8 : 4);
        auto n = ReadLE(width);
        if (!n.ok()) return n.status();
        if (*n > in_.size() - pos_) return Error("truncated string");
        const bool text = op == 'X' || op == 0x8c || op == 0x8d;
        return PushString(text ? Kind::kString : Kind::kBytes, *n);
      }
      case 'q': case 'r': {  // BINPUT, LONG_BINPUT
        auto index = ReadLE(op == 'q' ? 1 : 4);
        if (!index.ok()) return index.status();
        return Memo(*index);
      }
      case 0x94: return Memo(memo_.size());  // MEMOIZE
      case 'h': case 'j': {  // BINGET, LONG_BINGET
        auto index = ReadLE(op == 'h' ? 1 : 4);
        if (!index.ok()) return index.status();
        return Get(*index);
      }
      case 'c': {  // GLOBAL
        auto module = ReadLine();
        if (!module.ok()) return module.status();
        auto name = ReadLine();
        if (!name.ok()) return name.status();
        return PushGlobal(*module, *name);
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = Pop();
        if (!name.ok()) return name.status();
        auto module = Pop();
        if (!module.ok()) return module.status();
        if (At(*name).kind != Kind::kString || At(*module).kind != Kind::kString) {
          return Error("STACK_GLOBAL of non-strings");
        }
        return PushGlobal(At(*module).s, At(*name).s);
      }
      case 'R': return Reduce();
      case 'b': {  // BUILD: only object state we can ignore (OrderedDict._metadata).
        auto state = Pop();
        if (!state.ok()) return state.status();
        auto obj = Top();
        if (!obj.ok()) return obj.status();
        const Kind k = At(*obj).kind;
        if (k != Kind::kDict && k != Kind::kTensor) return Error("BUILD on an object that is not a dict or tensor");
        return absl::OkStatus();
      }
      case 'Q': return PersistentLoad();  // BINPERSID
      case '0': return Pop().status();    // POP
      case '1': return PopMark().status();  // POP_MARK
      case '2': {  // DUP
        auto v = Top();
        if (!v.ok()) return v.status();
        stack_.push_back(*v);
        return absl::OkStatus();
      }
      default:
        return Error("unsupported opcode");
    }
  }

  absl::string_view in_;
  ParseOptions options_;
  size_t pos_ = 0;
  bool done_ = false;
  Document doc_;
  std::vector<int> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, int> memo_;
};

bool IsTensorDict(const Document& doc, const Value& v) {
  if (v.kind != Kind::kDict) return false;
  for (size_t i = 0; i + 1 < v.items.size(); i += 2) {
    if (doc.values[v.items[i]].kind != Kind::kString || doc.values[v.items[i + 1]].kind != Kind::kTensor) {
      return false;
    }
  }
  return true;
}

absl::Status CheckTensor(const std::string& name, const TensorRef& t) {
  auto err = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": ", what));
  };
  if (t.size.size() != t.stride.size()) return err("size and stride ranks differ");
  if (t.size.size() > 64) return err("more than 64 dimensions");
  if (t.storage_offset < 0) return err("negative storage offset");
  int64_t last = t.storage_offset;  // Largest element index touched.
  int64_t numel = 1;
  for (size_t i = 0; i < t.size.size(); ++i) {
    if (t.size[i] < 0 || t.stride[i] < 0) return err("negative size or stride");
    if (__builtin_mul_overflow(numel, t.size[i], &numel)) return err("size overflows");
  }
  if (numel == 0) return absl::OkStatus();
  for (size_t i = 0; i < t.size.size(); ++i) {
    int64_t span = 0;
    if (__builtin_mul_overflow(t.size[i] - 1, t.stride[i], &span) || __builtin_add_overflow(last, span, &last)) {
      return err("strides overflow");
    }
  }
  if (last >= t.storage.numel) {
    return err(absl::StrCat("reaches element ", last, " of a storage of ", t.storage.numel));
  }
  return absl::OkStatus();
}

}  // namespace

int ElementSize(StorageType type) {
  for (const auto& s : kStorages) {
    if (s.type == type) return s.size;
  }
  return 0;
}

const char* StorageTypeName(StorageType type) {
  for (const auto& s : kStorages) {
    if (s.type == type) return s.name;
  }
  return "?";
}

absl::StatusOr<Document> Parse(absl::string_view bytes, const ParseOptions& options) {
  return Unpickler(bytes, options).Run();
}

absl::StatusOr<std::map<std::string, TensorRef>> ExtractStateDict(const Document& doc) {
  if (doc.root < 0 || static_cast<size_t>(doc.root) >= doc.values.size()) {
    return absl::InvalidArgumentError("empty pickle document");
  }
  const Value* dict = &doc.values[doc.root];
  if (dict->kind != Kind::kDict) {
    return absl::InvalidArgumentError("torch.save payload is not a dict (not a state dict or checkpoint)");
  }
  if (!IsTensorDict(doc, *dict)) {
    const Value* found = nullptr;
    std::vector<std::string> keys;
    for (const char* wanted : {"state_dict", "model_state_dict", "model", "module"}) {
      for (size_t i = 0; i + 1 < dict->items.size() && found == nullptr; i += 2) {
        const Value& k = doc.values[dict->items[i]];
        if (k.kind == Kind::kString && k.s == wanted && IsTensorDict(doc, doc.values[dict->items[i + 1]])) {
          found = &doc.values[dict->items[i + 1]];
        }
      }
    }
    if (found == nullptr) {
      for (size_t i = 0; i + 1 < dict->items.size() && keys.size() < 20; i += 2) {
        const Value& k = doc.values[dict->items[i]];
        keys.push_back(k.kind == Kind::kString ? k.s : "<non-string>");
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "no state dict found: the payload is neither a dict of tensors nor has one under "
          "state_dict/model_state_dict/model/module; top-level keys: ",
          absl::StrJoin(keys, ", ")));
    }
    dict = found;
  }
  std::map<std::string, TensorRef> out;
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
    const std::string& name = doc.values[dict->items[i]].s;
    const TensorRef& t = doc.values[dict->items[i + 1]].tensor;
    absl::Status s = CheckTensor(name, t);
    if (!s.ok()) return s;
    out[name] = t;
  }
  return out;
}

absl::StatusOr<std::map<std::string, TensorRef>> ParseStateDict(absl::string_view data_pkl) {
  auto doc = Parse(data_pkl);
  if (!doc.ok()) return doc.status();
  return ExtractStateDict(*doc);
}

}  // namespace skinlesion::pickle
