// Status helpers used across the project.
//
// Recoverable errors are absl::Status / absl::StatusOr<T>; codes follow the retry
// rules of absl/status/status.h (kInvalidArgument: the input is bad; kUnavailable:
// retry; kFailedPrecondition: fix state first). These macros are the project's
// spelling of the usual early-return idioms.
#ifndef SKINLESION_COMMON_STATUS_H_
#define SKINLESION_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define SL_STATUS_CONCAT_INNER_(a, b) a##b
#define SL_STATUS_CONCAT_(a, b) SL_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define SL_RETURN_IF_ERROR(expr)                 \
  do {                                           \
    const ::absl::Status sl_status_ = (expr);    \
    if (!sl_status_.ok()) return sl_status_;     \
  } while (0)

// `lhs = value of rexpr` or return its status. `lhs` may declare a variable:
//   SL_ASSIGN_OR_RETURN(auto image, DecodeImage(bytes));
#define SL_ASSIGN_OR_RETURN(lhs, rexpr) \
  SL_ASSIGN_OR_RETURN_IMPL_(SL_STATUS_CONCAT_(sl_statusor_, __LINE__), lhs, rexpr)
#define SL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                              \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()

namespace skinlesion {

// Prefixes the message of a non-OK status with context, keeping its code:
//   return Annotate(status, "reading ", path);
template <typename... Args>
absl::Status Annotate(const absl::Status& status, const Args&... context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context..., ": ", status.message()));
}

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_STATUS_H_
