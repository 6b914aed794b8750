#include "raft/raft_log.h"

#include <algorithm>

namespace raftkv::raft {

RaftLog::RaftLog(const LogStorage* storage, uint64_t committed, uint64_t applied)
    : storage_(storage),
      offset_(storage->LastIndex() + 1),
      committed_(committed),
      applied_(applied) {}

uint64_t RaftLog::FirstIndex() const {
  if (pending_snapshot_) return pending_snapshot_->index() + 1;
  return storage_->FirstIndex();
}

uint64_t RaftLog::LastIndex() const {
  if (!unstable_.empty()) return unstable_.back().index();
  return offset_ - 1;
}

uint64_t RaftLog::LastTerm() const { return TermOr0(LastIndex()); }

absl::StatusOr<uint64_t> RaftLog::Term(uint64_t index) const {
  if (index >= offset_) {
    if (index - offset_ < unstable_.size()) return unstable_[index - offset_].term();
    return LogUnavailableError(index);
  }
  if (pending_snapshot_) {
    if (index == pending_snapshot_->index()) return pending_snapshot_->term();
    return LogCompactedError(index);
  }
  return storage_->Term(index);
}

uint64_t RaftLog::TermOr0(uint64_t index) const {
  auto t = Term(index);
  return t.ok() ? *t : 0;
}

bool RaftLog::MatchTerm(uint64_t index, uint64_t term) const {
  auto t = Term(index);
  return t.ok() && *t == term;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  const uint64_t our_term = LastTerm();
  return last_term > our_term || (last_term == our_term && last_index >= LastIndex());
}

absl::StatusOr<std::vector<Entry>> RaftLog::Entries(uint64_t lo, uint64_t hi,
                                                    uint64_t max_bytes) const {
  if (lo < FirstIndex()) return LogCompactedError(lo);
  if (hi > LastIndex() + 1) return LogUnavailableError(hi - 1);
  std::vector<Entry> out;
  if (lo >= hi) return out;
  uint64_t bytes = 0;
  if (lo < offset_) {
    auto stored = storage_->Entries(lo, std::min(hi, offset_), max_bytes);
    if (!stored.ok()) return stored.status();
    for (auto& e : *stored) bytes += e.ByteSizeLong();
    out = std::move(*stored);
    // Storage stopped early on the byte limit: do not continue past the gap.
    if (lo + out.size() < std::min(hi, offset_)) return out;
  }
  for (uint64_t i = std::max(lo, offset_); i < hi; ++i) {
    const Entry& e = unstable_[i - offset_];
    bytes += e.ByteSizeLong();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

void RaftLog::Append(std::vector<Entry> entries) {
  if (entries.empty()) return;
  const uint64_t first = entries.front().index();
  if (first >= offset_ + unstable_.size()) {
    // Continues the log.
  } else if (first >= offset_) {
    unstable_.resize(first - offset_);
  } else {
    // Replaces part of the stored log: the stored suffix from `first` on is
    // stale from now on and will be overwritten when this tail is persisted.
    offset_ = first;
    unstable_.clear();
  }
  for (auto& e : entries) unstable_.push_back(std::move(e));
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t prev_index, uint64_t prev_term,
                                             std::vector<Entry> entries, bool skip_check) {
  if (skip_check) {
    if (prev_index > LastIndex()) return std::nullopt;
  } else if (!MatchTerm(prev_index, prev_term)) {
    return std::nullopt;
  }
  const uint64_t last_new = prev_index + entries.size();
  // Skip the entries we already have; the first mismatch (or the first entry
  // past our end) is where the new ones start.
  size_t i = 0;
  while (i < entries.size() && MatchTerm(entries[i].index(), entries[i].term())) ++i;
  if (i < entries.size()) {
    if (entries[i].index() <= committed_ && violation_.empty()) {
      violation_ = "append overwrote committed entry " + std::to_string(entries[i].index());
    }
    // The entries already held are dropped and the rest moved, not copied:
    // every entry a follower receives passes through here.
    entries.erase(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(i));
    Append(std::move(entries));
  }
  return last_new;
}

uint64_t RaftLog::FirstIndexOfTermAt(uint64_t index, uint64_t floor) const {
  const uint64_t term = TermOr0(index);
  while (index > floor && index > FirstIndex() && TermOr0(index - 1) == term) --index;
  return index;
}

uint64_t RaftLog::LastIndexWithTermAtMost(uint64_t from, uint64_t term) const {
  uint64_t index = std::min(from, LastIndex());
  while (index >= FirstIndex()) {
    auto t = Term(index);
    if (!t.ok() || *t <= term) return index;
    --index;
  }
  return index;
}

void RaftLog::CommitTo(uint64_t index) {
  if (index > committed_) committed_ = std::min(index, LastIndex());
}

std::vector<Entry> RaftLog::TakeCommittedEntries(uint64_t max_bytes) {
  std::vector<Entry> out;
  if (applied_ >= committed_) return out;
  auto entries = Entries(applied_ + 1, committed_ + 1, max_bytes);
  if (!entries.ok()) return out;
  out = std::move(*entries);
  if (!out.empty()) applied_ = out.back().index();
  return out;
}

void RaftLog::StableTo(uint64_t index) {
  if (unstable_.empty() || index < offset_) return;
  const uint64_t n = std::min<uint64_t>(index - offset_ + 1, unstable_.size());
  unstable_.erase(unstable_.begin(), unstable_.begin() + n);
  offset_ += n;
}

}  // namespace raftkv::raft

namespace raftkv::raft {

void RaftLog::Restore(const SnapshotMetadata& meta) {
  pending_snapshot_ = meta;
  unstable_.clear();
  offset_ = meta.index() + 1;
  committed_ = meta.index();
  applied_ = meta.index();
}

}  // namespace raftkv::raft
