#include "raft/memory_storage.h"

#include "absl/strings/str_cat.h"

namespace raftkv::raft {

MemoryStorage::MemoryStorage() = default;

MemoryStorage::MemoryStorage(const ConfState& initial_conf) {
  *snapshot_.mutable_conf_state() = initial_conf;
}

absl::StatusOr<InitialState> MemoryStorage::GetInitialState() const {
  return InitialState{hard_state_, snapshot_.conf_state()};
}

uint64_t MemoryStorage::FirstIndex() const { return snapshot_.index() + 1; }

uint64_t MemoryStorage::LastIndex() const { return snapshot_.index() + entries_.size(); }

SnapshotMetadata MemoryStorage::Snapshot() const { return snapshot_; }

absl::StatusOr<uint64_t> MemoryStorage::Term(uint64_t index) const {
  if (index < snapshot_.index()) return LogCompactedError(index);
  if (index > LastIndex()) return LogUnavailableError(index);
  if (index == snapshot_.index()) return snapshot_.term();
  return entries_[index - snapshot_.index() - 1].term();
}

absl::StatusOr<std::vector<Entry>> MemoryStorage::Entries(uint64_t lo, uint64_t hi,
                                                          uint64_t max_bytes) const {
  if (lo < FirstIndex()) return LogCompactedError(lo);
  if (hi > LastIndex() + 1) return LogUnavailableError(hi - 1);
  std::vector<Entry> out;
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = entries_[i - snapshot_.index() - 1];
    bytes += e.ByteSizeLong();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

absl::Status MemoryStorage::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  const uint64_t first = entries.front().index();
  if (first < FirstIndex() || first > LastIndex() + 1) {
    return absl::InvalidArgumentError(absl::StrCat("append at index ", first, " outside [",
                                                   FirstIndex(), ", ", LastIndex() + 1, "]"));
  }
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].index() != first + i) {
      return absl::InvalidArgumentError("appended entries are not contiguous");
    }
  }
  entries_.resize(first - FirstIndex());
  entries_.insert(entries_.end(), entries.begin(), entries.end());
  return absl::OkStatus();
}

absl::Status MemoryStorage::Compact(uint64_t index, const ConfState& conf) {
  if (index <= snapshot_.index()) return absl::OkStatus();
  if (index > LastIndex()) {
    return absl::InvalidArgumentError(
        absl::StrCat("compact to ", index, " beyond last index ", LastIndex()));
  }
  auto term = Term(index);
  if (!term.ok()) return term.status();
  entries_.erase(entries_.begin(), entries_.begin() + (index - snapshot_.index()));
  snapshot_.set_index(index);
  snapshot_.set_term(*term);
  *snapshot_.mutable_conf_state() = conf;
  return absl::OkStatus();
}

void MemoryStorage::ApplySnapshot(const SnapshotMetadata& meta) {
  snapshot_ = meta;
  entries_.clear();
}

}  // namespace raftkv::raft
