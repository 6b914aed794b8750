#include "tests/sim/safety_checker.h"

#include "absl/strings/str_cat.h"

namespace raftkv::sim {
namespace {

uint64_t Mix(uint64_t x) {
  // splitmix64 finaliser: a cheap, well-spread 64-bit mix.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t HashBytes(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

uint64_t ChainHash(uint64_t prev, const raft::Entry& e) {
  uint64_t h = Mix(prev ^ Mix(e.index()));
  h = Mix(h ^ e.term());
  h = Mix(h ^ static_cast<uint64_t>(e.type()));
  return Mix(h ^ HashBytes(e.data()));
}

SafetyChecker::SafetyChecker(int num_nodes) : nodes_(num_nodes + 1) {}

absl::Status SafetyChecker::Fail(absl::Status s) {
  if (first_violation_.ok()) first_violation_ = s;
  return s;
}

absl::Status SafetyChecker::OnSend(uint64_t node, const raft::Message& msg) {
  if (msg.from() != node) {
    return Fail(
        absl::InternalError(absl::StrCat("node ", node, " sent a message with from=", msg.from())));
  }
  if (msg.has_vote_response() && msg.vote_response().granted() && !msg.vote_response().pre_vote()) {
    const uint64_t term = msg.vote_response().term();
    auto [it, inserted] = vote_by_node_term_.try_emplace({node, term}, msg.to());
    if (!inserted && it->second != msg.to()) {
      return Fail(absl::InternalError(absl::StrCat("one vote per term (§5.2): node ", node,
                                                   " granted its vote in term ", term, " to node ",
                                                   it->second, " and to node ", msg.to())));
    }
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::OnPersistEntries(uint64_t node, const raft::MemoryStorage& log,
                                             const std::vector<raft::Entry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  PerNode& n = nodes_[node];
  const uint64_t first = entries.front().index();
  if (first == 0 || first > n.chain.size() + 1) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " persists entries from index ",
                                                 first, " but its log ends at ", n.chain.size())));
  }
  // Below the commit index the log must not change: the node already told the
  // world (or its own state machine) these entries are committed.
  const uint64_t commit = std::max(n.commit, log.hard_state().commit());
  std::vector<uint64_t> old_chain(n.chain.begin() + (first - 1), n.chain.end());
  n.chain.resize(first - 1);
  n.chain_terms.resize(first - 1);
  for (const raft::Entry& e : entries) {
    if (e.index() != n.chain.size() + 1) {
      return Fail(absl::InternalError(
          absl::StrCat("node ", node, " persists non-contiguous entries at ", e.index())));
    }
    const uint64_t prev_term = n.chain_terms.empty() ? 0 : n.chain_terms.back();
    if (e.term() < prev_term) {
      return Fail(absl::InternalError(absl::StrCat("log terms decrease on node ", node, ": entry ",
                                                   e.index(), " has term ", e.term(),
                                                   " after term ", prev_term)));
    }
    const uint64_t prev = n.chain.empty() ? 0 : n.chain.back();
    const uint64_t h = ChainHash(prev, e);
    n.chain.push_back(h);
    n.chain_terms.push_back(e.term());
    if (e.index() <= commit) {
      const size_t k = e.index() - first;
      if (k >= old_chain.size() || old_chain[k] != h) {
        return Fail(absl::InternalError(absl::StrCat("committed entry rolled back: node ", node,
                                                     " overwrites index ", e.index(),
                                                     " at or below its commit index ", commit)));
      }
    }
    auto [it, inserted] = prefix_by_index_term_.try_emplace({e.index(), e.term()}, h);
    if (!inserted && it->second != h) {
      return Fail(absl::InternalError(absl::StrCat(
          "log matching (§5.3): node ", node, " holds an entry at index ", e.index(), " term ",
          e.term(),
          " whose log prefix differs from another log's entry with that index and term")));
    }
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::OnPersistHardState(uint64_t node, const raft::HardState& before,
                                               const raft::HardState& hs) {
  if (hs.term() < before.term()) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " persists term ", hs.term(),
                                                 " below its stored term ", before.term())));
  }
  if (hs.term() == before.term() && before.vote() != 0 && hs.vote() != before.vote()) {
    return Fail(
        absl::InternalError(absl::StrCat("node ", node, " changes its stored vote in term ",
                                         hs.term(), " from ", before.vote(), " to ", hs.vote())));
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::RecordCommitted(uint64_t node, uint64_t index, uint64_t term) {
  PerNode& n = nodes_[node];
  const uint64_t h = n.chain[index - 1];
  if (index <= committed_.size()) {
    if (committed_[index - 1].prefix_hash != h) {
      return Fail(absl::InternalError(absl::StrCat(
          "commit safety: node ", node, " has commit index >= ", index,
          " but its log up to there differs from another node that committed index ", index)));
    }
    return absl::OkStatus();
  }
  committed_.push_back({n.chain_terms[index - 1], h, term});
  // Every current leader of a later term must already hold it (§5.4.1).
  for (uint64_t id = 1; id < nodes_.size(); ++id) {
    const PerNode& l = nodes_[id];
    if (!l.up || !l.is_leader || l.term <= term) continue;
    if (l.chain.size() < index || l.chain[index - 1] != h) {
      return Fail(absl::InternalError(
          absl::StrCat("leader completeness (§5.4): entry ", index, " committed in term <= ", term,
                       " is missing from the log of node ", id, ", leader of term ", l.term)));
    }
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::CheckLeaderCompleteness(uint64_t node, uint64_t term) {
  // The highest index committed in an earlier term; a prefix hash covers all
  // entries before it too.
  for (size_t i = committed_.size(); i > 0; --i) {
    if (committed_[i - 1].commit_term >= term) continue;
    const PerNode& n = nodes_[node];
    if (n.chain.size() < i || n.chain[i - 1] != committed_[i - 1].prefix_hash) {
      return Fail(absl::InternalError(
          absl::StrCat("leader completeness (§5.4): node ", node, " became leader of term ", term,
                       " without the entries up to index ", i,
                       ", committed in term <= ", committed_[i - 1].commit_term)));
    }
    break;
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::Observe(uint64_t node, const raft::NodeStatus& st,
                                    const raft::MemoryStorage& log) {
  PerNode& n = nodes_[node];
  const raft::HardState& hs = log.hard_state();
  if (st.term != hs.term() || st.vote != hs.vote()) {
    return Fail(absl::InternalError(absl::StrCat(
        "node ", node, " runs with term ", st.term, " vote ", st.vote,
        " after handling all Readies, but persisted term ", hs.term(), " vote ", hs.vote())));
  }
  if (st.term < n.term) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", node, " term went back from ", n.term, " to ", st.term)));
  }
  n.term = st.term;
  const bool leader = st.role == raft::Role::kLeader;
  if (leader) {
    auto [it, inserted] = leader_by_term_.try_emplace(st.term, node);
    if (!inserted && it->second != node) {
      return Fail(
          absl::InternalError(absl::StrCat("election safety (§5.2): nodes ", it->second, " and ",
                                           node, " both leader of term ", st.term)));
    }
    if (!n.is_leader || n.leader_term != st.term) {
      n.is_leader = true;
      n.leader_term = st.term;
      if (auto s = CheckLeaderCompleteness(node, st.term); !s.ok()) return s;
    }
  } else {
    n.is_leader = false;
  }
  if (st.commit < n.commit) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", node, " commit index went back from ", n.commit, " to ", st.commit)));
  }
  if (st.commit > n.chain.size()) {
    return Fail(
        absl::InternalError(absl::StrCat("node ", node, " commit index ", st.commit,
                                         " is beyond its persisted log end ", n.chain.size())));
  }
  n.commit = st.commit;
  for (uint64_t i = n.commit_checked + 1; i <= st.commit; ++i) {
    if (auto s = RecordCommitted(node, i, st.term); !s.ok()) return s;
  }
  n.commit_checked = std::max(n.commit_checked, st.commit);
  if (n.applied > st.commit) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " applied index ", n.applied,
                                                 " is beyond its commit index ", st.commit)));
  }
  return absl::OkStatus();
}

absl::Status SafetyChecker::OnApply(uint64_t node, const raft::Entry& e) {
  PerNode& n = nodes_[node];
  if (e.index() != n.applied + 1) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", node, " applies index ", e.index(), " after index ", n.applied)));
  }
  n.applied = e.index();
  n.applied_hash = ChainHash(n.applied_hash, e);
  if (e.index() <= applied_prefix_.size()) {
    if (applied_prefix_[e.index() - 1] != n.applied_hash) {
      return Fail(absl::InternalError(
          absl::StrCat("state-machine safety (§5.4.3): node ", node, " applies an entry at index ",
                       e.index(), " (term ", e.term(), ") differing from one applied elsewhere")));
    }
  } else {
    applied_prefix_.push_back(n.applied_hash);
  }
  if (e.index() <= committed_.size() && committed_[e.index() - 1].prefix_hash != n.applied_hash) {
    return Fail(absl::InternalError(absl::StrCat("state-machine safety: node ", node,
                                                 " applies index ", e.index(), " (term ", e.term(),
                                                 ") but a different entry was committed there")));
  }
  if (e.type() == raftkv::v1::ENTRY_NORMAL && !e.data().empty()) {
    if (!proposed_.contains(e.data())) {
      return Fail(absl::InternalError(
          absl::StrCat("node ", node, " applies a value no client proposed at index ", e.index())));
    }
    auto [it, inserted] = value_index_.try_emplace(e.data(), e.index());
    if (!inserted && it->second != e.index()) {
      return Fail(absl::InternalError(absl::StrCat("value '", e.data(), "' applied at index ",
                                                   it->second, " and at index ", e.index())));
    }
  }
  return absl::OkStatus();
}

void SafetyChecker::OnReadIssued(uint64_t node, const std::string& context) {
  reads_[context] = PendingRead{node, committed_.size()};
}

absl::Status SafetyChecker::OnReadState(uint64_t node, const raft::ReadState& rs,
                                        uint64_t node_commit) {
  auto it = reads_.find(rs.context);
  if (it == reads_.end() || it->second.node != node) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", node, " answers read '", rs.context, "' ",
                     reads_done_.contains(rs.context) ? "a second time" : "it was never asked")));
  }
  if (rs.index < it->second.min_index) {
    return Fail(absl::InternalError(absl::StrCat(
        "stale read (thesis §6.4): node ", node, " answers read '", rs.context, "' at index ",
        rs.index, " but index ", it->second.min_index, " was committed before it was issued")));
  }
  if (rs.index > node_commit) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " answers read '", rs.context,
                                                 "' at index ", rs.index,
                                                 " beyond its commit index ", node_commit)));
  }
  reads_.erase(it);
  reads_done_.insert(rs.context);
  ++reads_answered_;
  return absl::OkStatus();
}

absl::Status SafetyChecker::OnReadDropped(uint64_t node, const std::string& context) {
  auto it = reads_.find(context);
  if (it == reads_.end() || it->second.node != node) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", node, " drops read '", context, "' it does not hold")));
  }
  reads_.erase(it);
  return absl::OkStatus();
}

absl::Status SafetyChecker::OnSnapshot(uint64_t node, const raft::SnapshotMetadata& meta) {
  PerNode& n = nodes_[node];
  const uint64_t i = meta.index();
  if (i == 0 || i > committed_.size()) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " installs a snapshot at index ", i,
                                                 " but only ", committed_.size(),
                                                 " entries are known committed")));
  }
  if (committed_[i - 1].term != meta.term()) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " installs a snapshot at index ", i,
                                                 " term ", meta.term(), " but the entry committed",
                                                 " there has term ", committed_[i - 1].term)));
  }
  if (n.applied > i) {
    return Fail(absl::InternalError(absl::StrCat("node ", node, " installs a snapshot at index ", i,
                                                 " behind its applied index ", n.applied)));
  }
  // The log and the state machine now hold exactly the committed prefix.
  n.chain.resize(i);
  n.chain_terms.resize(i);
  for (uint64_t k = 0; k < i; ++k) {
    n.chain[k] = committed_[k].prefix_hash;
    n.chain_terms[k] = committed_[k].term;
  }
  n.applied = i;
  n.applied_hash = committed_[i - 1].prefix_hash;
  while (applied_prefix_.size() < i) {
    applied_prefix_.push_back(committed_[applied_prefix_.size()].prefix_hash);
  }
  return absl::OkStatus();
}

void SafetyChecker::OnCrash(uint64_t node, bool keep_state_machine) {
  PerNode& n = nodes_[node];
  n.up = false;
  n.is_leader = false;
  n.commit = 0;
  n.commit_checked = 0;
  if (!keep_state_machine) {
    n.applied = 0;
    n.applied_hash = 0;
  }
  for (auto it = reads_.begin(); it != reads_.end();) {
    it = it->second.node == node ? reads_.erase(it) : std::next(it);
  }
}

void SafetyChecker::OnRestart(uint64_t node) { nodes_[node].up = true; }

}  // namespace raftkv::sim
