#include "raft/progress.h"

#include <algorithm>

namespace raftkv::raft {

bool Progress::IsPaused() const {
  switch (state_) {
    case ProgressState::kProbe:
      return probe_sent_;
    case ProgressState::kReplicate:
      return static_cast<int>(inflight_.size()) >= max_inflight_;
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

bool Progress::MaybeUpdate(uint64_t index) {
  bool updated = false;
  if (index > match_) {
    match_ = index;
    updated = true;
    probe_sent_ = false;
  }
  next_ = std::max(next_, index + 1);
  while (!inflight_.empty() && inflight_.front() <= index) inflight_.pop_front();
  return updated;
}

void Progress::SentEntries(uint64_t last, bool carried_entries) {
  if (state_ == ProgressState::kReplicate) {
    if (carried_entries) {
      next_ = last + 1;
      inflight_.push_back(last);
    }
  } else if (state_ == ProgressState::kProbe) {
    probe_sent_ = true;
  }
}

bool Progress::MaybeDecreaseTo(uint64_t rejected, uint64_t hint) {
  if (state_ == ProgressState::kReplicate) {
    // Anything at or below match was acknowledged already: a stale rejection.
    if (rejected <= match_) return false;
    next_ = std::max(match_ + 1, std::min(hint, rejected));
    return true;
  }
  // In probe, only the answer to the outstanding probe counts.
  if (next_ == 0 || rejected != next_ - 1) return false;
  next_ = std::max(match_ + 1, std::min(hint, rejected));
  probe_sent_ = false;
  return true;
}

void Progress::BecomeProbe() {
  state_ = ProgressState::kProbe;
  probe_sent_ = false;
  inflight_.clear();
  next_ = std::max(next_, match_ + 1);
}

void Progress::BecomeSnapshot(uint64_t index) {
  state_ = ProgressState::kSnapshot;
  probe_sent_ = false;
  inflight_.clear();
  pending_snapshot_ = index;
}

void Progress::BecomeReplicate() {
  state_ = ProgressState::kReplicate;
  probe_sent_ = false;
  inflight_.clear();
  next_ = match_ + 1;
}

void Progress::OnHeartbeatResponse() {
  probe_sent_ = false;
  if (state_ == ProgressState::kReplicate && !inflight_.empty() &&
      static_cast<int>(inflight_.size()) >= max_inflight_) {
    inflight_.pop_front();
  }
}

}  // namespace raftkv::raft
