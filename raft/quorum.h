// Quorum arithmetic over a set of voters: pure functions, no state of their own.
//
// A MajorityConfig is one set of voters. During a joint-consensus transition
// (later issue) two of them must agree; JointConfig composes them so that the
// rest of the core asks one question whichever kind of configuration is in force.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>

namespace raftkv::raft {

enum class VoteResult { kPending, kWon, kLost };

class MajorityConfig {
 public:
  MajorityConfig() = default;
  explicit MajorityConfig(std::set<uint64_t> voters) : voters_(std::move(voters)) {}

  const std::set<uint64_t>& voters() const { return voters_; }
  bool Contains(uint64_t id) const { return voters_.count(id) > 0; }
  size_t QuorumSize() const { return voters_.size() / 2 + 1; }

  // The largest index that a quorum of voters has reached, given each voter's
  // acknowledged index (`acked(id)`, 0 if unknown). An empty config commits
  // everything: it places no constraint on a joint config.
  uint64_t CommittedIndex(const std::function<uint64_t(uint64_t)>& acked) const;

  // kWon once a quorum granted, kLost once a quorum can no longer grant.
  // `vote(id)` is true (granted), false (rejected) or nullopt (no answer yet).
  VoteResult Tally(const std::function<std::optional<bool>(uint64_t)>& vote) const;

  // True when a quorum of voters satisfies `active`.
  bool QuorumActive(const std::function<bool(uint64_t)>& active) const;

 private:
  std::set<uint64_t> voters_;
};

}  // namespace raftkv::raft
