#include "raft/quorum.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace raftkv::raft {

uint64_t MajorityConfig::CommittedIndex(const std::function<uint64_t(uint64_t)>& acked) const {
  if (voters_.empty()) return std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> indexes;
  indexes.reserve(voters_.size());
  for (uint64_t id : voters_) indexes.push_back(acked(id));
  // Sorted descending, the quorum-th value is reached by at least a quorum.
  std::sort(indexes.begin(), indexes.end(), std::greater<>());
  return indexes[QuorumSize() - 1];
}

VoteResult MajorityConfig::Tally(const std::function<std::optional<bool>(uint64_t)>& vote) const {
  if (voters_.empty()) return VoteResult::kWon;
  size_t granted = 0, rejected = 0;
  for (uint64_t id : voters_) {
    auto v = vote(id);
    if (!v.has_value()) continue;
    if (*v) {
      ++granted;
    } else {
      ++rejected;
    }
  }
  if (granted >= QuorumSize()) return VoteResult::kWon;
  if (voters_.size() - rejected < QuorumSize()) return VoteResult::kLost;
  return VoteResult::kPending;
}

bool MajorityConfig::QuorumActive(const std::function<bool(uint64_t)>& active) const {
  size_t n = 0;
  for (uint64_t id : voters_) n += active(id) ? 1 : 0;
  return n >= QuorumSize();
}

}  // namespace raftkv::raft
