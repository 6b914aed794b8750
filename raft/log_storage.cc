#include "raft/log_storage.h"

#include "absl/strings/str_cat.h"

namespace raftkv::raft {

absl::Status LogCompactedError(uint64_t index) {
  return absl::OutOfRangeError(absl::StrCat("log index ", index, " is compacted"));
}

absl::Status LogUnavailableError(uint64_t index) {
  return absl::NotFoundError(absl::StrCat("log index ", index, " is beyond the last index"));
}

bool IsLogCompacted(const absl::Status& status) {
  return status.code() == absl::StatusCode::kOutOfRange;
}

bool IsLogUnavailable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kNotFound;
}

}  // namespace raftkv::raft
