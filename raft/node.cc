// The Raft core. Structure follows the Raft paper's figure 2: Step() settles
// the message's term once (§5.1, plus PreVote and leader stickiness from the
// thesis §9.6), then hands the message to the step function of the current
// role. Each role's data lives in its own struct inside `role_`, so only the
// leader can touch follower progress and only a candidate counts votes.

#include <algorithm>
#include <deque>
#include <iterator>
#include <set>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/node.h"
#include "raft/progress.h"
#include "raft/quorum.h"
#include "raft/raft_log.h"

namespace raftkv::raft {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "unknown";
}

const char* ProgressStateName(ProgressState state) {
  switch (state) {
    case ProgressState::kProbe:
      return "probe";
    case ProgressState::kReplicate:
      return "replicate";
    case ProgressState::kSnapshot:
      return "snapshot";
  }
  return "unknown";
}

namespace {

// splitmix64: tiny, seedable, and the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

struct FollowerRole {};

// Votes received in a (pre-)election: id -> granted.
struct PreCandidateRole {
  std::map<uint64_t, bool> votes;
};
struct CandidateRole {
  std::map<uint64_t, bool> votes;
};

struct PendingRead {
  std::string context;
  uint64_t index = 0;  // 0 until the leader has committed an entry of its term
  uint64_t round = 0;  // heartbeat round that must be acknowledged by a quorum
};

struct LeaderRole {
  std::map<uint64_t, Progress> progress;  // every peer except this node
  std::deque<PendingRead> reads;          // in increasing round order
  uint64_t transfer_target = 0;
  int heartbeat_elapsed = 0;
  bool broadcast_pending = false;   // proposals appended since the last send
  bool read_round_pending = false;  // reads waiting for a round to be sent
  // Thrifty replication: the followers sent new entries at once.
  std::set<uint64_t> eager;
  // The last log index at the previous tick: an eager follower whose match
  // is below it has left entries unacknowledged for a whole tick.
  uint64_t last_index_at_tick = 0;
};

uint64_t MessageTerm(const Message& m) {
  switch (m.body_case()) {
    case Message::kVoteRequest:
      return m.vote_request().term();
    case Message::kVoteResponse:
      return m.vote_response().term();
    case Message::kAppendRequest:
      return m.append_request().term();
    case Message::kAppendResponse:
      return m.append_response().term();
    case Message::kSnapshotRequest:
      return m.snapshot_request().term();
    case Message::kSnapshotResponse:
      return m.snapshot_response().term();
    case Message::kTimeoutNow:
      return m.timeout_now().term();
    case Message::kForwardRequest:
    case Message::kForwardResponse:
    case Message::kForwardReadRequest:
    case Message::kForwardReadResponse:
    case Message::BODY_NOT_SET:
      break;
  }
  return 0;
}

bool SameHardState(const HardState& a, const HardState& b) {
  return a.term() == b.term() && a.vote() == b.vote() && a.commit() == b.commit();
}

class NodeImpl final : public Node {
 public:
  NodeImpl(const Config& config, const LogStorage* storage, const InitialState& init,
           uint64_t commit)
      : config_(config),
        storage_(storage),
        rng_(config.random_seed * 0x9e3779b97f4a7c15ULL + config.id),
        log_(storage, commit, std::min(config.applied, commit)),
        term_(init.hard_state.term()),
        vote_(init.hard_state.vote()) {
    std::set<uint64_t> voters(init.conf_state.voters().begin(), init.conf_state.voters().end());
    voters_ = MajorityConfig(std::move(voters));
    learners_.insert(init.conf_state.learners().begin(), init.conf_state.learners().end());
    prev_hard_state_.set_term(term_);
    prev_hard_state_.set_vote(vote_);
    prev_hard_state_.set_commit(log_.committed());
    checked_term_ = term_;
    checked_commit_ = log_.committed();
    BecomeFollower(term_, 0);
  }

  // ---- Inputs ----

  void Tick() override {
    if (auto* leader = std::get_if<LeaderRole>(&role_)) {
      TickLeader(*leader);
      return;
    }
    ++election_elapsed_;
    if (Promotable() && election_elapsed_ >= randomized_election_timeout_) {
      Campaign(config_.pre_vote ? CampaignKind::kPreVote : CampaignKind::kElection);
    }
  }

  absl::Status Step(Message msg) override {
    if (msg.body_case() == Message::BODY_NOT_SET) {
      return absl::InvalidArgumentError("raft message has no body");
    }
    if (msg.has_forward_request() || msg.has_forward_response() ||
        msg.has_forward_read_request() || msg.has_forward_read_response()) {
      return absl::InvalidArgumentError("a forwarded request is for the driver, not the core");
    }
    if (msg.from() == 0 || msg.from() == config_.id) {
      return absl::InvalidArgumentError(absl::StrCat("raft message from invalid node ", msg.from()));
    }
    if (msg.to() != config_.id) {
      return absl::InvalidArgumentError(
          absl::StrCat("raft message for node ", msg.to(), " delivered to node ", config_.id));
    }
    if (msg.has_append_request()) {
      const auto& req = msg.append_request();
      if (req.heartbeat() && req.entries_size() > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("heartbeat from ", msg.from(), " carries entries"));
      }
      for (int i = 0; i < req.entries_size(); ++i) {
        const Entry& e = req.entries(i);
        if (e.index() != req.prev_log_index() + 1 + i || e.term() > req.term() ||
            e.term() < req.prev_log_term()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "AppendEntries from ", msg.from(), " carries entry ", e.index(), " (term ", e.term(),
              ") out of sequence after prev ", req.prev_log_index()));
        }
      }
    }

    const uint64_t m_term = MessageTerm(msg);
    if (m_term > term_) {
      if (msg.has_vote_request()) {
        // Leader stickiness (thesis §4.2.3): while we hear from a live leader,
        // a disruptive candidate cannot move our term — unless the leader
        // itself asked it to campaign (leadership transfer).
        const bool in_lease = config_.check_quorum && leader_ != 0 &&
                              election_elapsed_ < config_.election_ticks;
        if (in_lease && !msg.vote_request().leadership_transfer()) return absl::OkStatus();
        if (!msg.vote_request().pre_vote()) BecomeFollower(m_term, 0);
        // A pre-vote never changes the receiver's term.
      } else if (msg.has_vote_response() && msg.vote_response().pre_vote() &&
                 msg.vote_response().granted()) {
        // A granted pre-vote carries the term we would campaign in.
      } else if (msg.has_append_request() || msg.has_snapshot_request() || msg.has_timeout_now()) {
        BecomeFollower(m_term, msg.from());
      } else {
        BecomeFollower(m_term, 0);
      }
    } else if (m_term < term_) {
      if ((config_.check_quorum || config_.pre_vote) && msg.has_append_request()) {
        // A stale leader may be cut off from everyone who could tell it about
        // the new term; without this answer it would never step down, and
        // with PreVote we would never disrupt it either.
        Message out = Envelope(msg.from());
        out.mutable_append_response()->set_term(term_);
        msgs_after_persist_.push_back(std::move(out));
      } else if (msg.has_vote_request() && msg.vote_request().pre_vote()) {
        Message out = Envelope(msg.from());
        auto* resp = out.mutable_vote_response();
        resp->set_term(term_);
        resp->set_pre_vote(true);
        resp->set_granted(false);
        msgs_after_persist_.push_back(std::move(out));
      }
      return absl::OkStatus();
    }

    if (msg.has_vote_request()) {
      HandleVoteRequest(msg);
      return absl::OkStatus();
    }
    if (auto* leader = std::get_if<LeaderRole>(&role_)) {
      StepLeader(*leader, msg);
    } else if (auto* pre = std::get_if<PreCandidateRole>(&role_)) {
      StepPreCandidate(*pre, msg);
    } else if (auto* cand = std::get_if<CandidateRole>(&role_)) {
      StepCandidate(*cand, msg);
    } else {
      StepFollower(msg);
    }
    return absl::OkStatus();
  }

  ProposeResult Propose(std::string data) override {
    ProposeResult result;
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) {
      result.outcome = ProposeOutcome::kNotLeader;
      result.leader = leader_;
      return result;
    }
    if (leader->transfer_target != 0) {
      result.outcome = ProposeOutcome::kTransferring;
      result.leader = leader->transfer_target;
      return result;
    }
    Entry e;
    e.set_term(term_);
    e.set_index(log_.LastIndex() + 1);
    e.set_type(v1::ENTRY_NORMAL);
    e.set_data(std::move(data));
    result.outcome = ProposeOutcome::kAccepted;
    result.index = e.index();
    result.term = e.term();
    std::vector<Entry> entries;
    entries.push_back(std::move(e));
    log_.Append(std::move(entries));
    leader->broadcast_pending = true;
    return result;
  }

  ProposeOutcome ReadIndex(std::string context) override {
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) return ProposeOutcome::kNotLeader;
    PendingRead read;
    read.context = std::move(context);
    // Until an entry of this term is committed, our commit index may lag the
    // true one (§8): the read point is fixed once the no-op commits.
    read.index = CommittedInCurrentTerm() ? log_.committed() : 0;
    read.round = read_round_ + 1;
    leader->reads.push_back(std::move(read));
    leader->read_round_pending = true;
    return ProposeOutcome::kAccepted;
  }

  void SendEntriesNow(uint64_t peer) override {
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) return;
    auto it = leader->progress.find(peer);
    if (it == leader->progress.end()) return;
    Progress& pr = it->second;
    const bool stale_commit = pr.commit_sent() < log_.committed();
    if (!Lazy(*leader, peer, pr) && !stale_commit) return;
    // Entries if it lacks any (they carry the commit index), else the commit
    // index alone if it has not been told it yet.
    SendAppend(*leader, peer, /*allow_empty=*/stale_commit);
  }

  void AnnounceCommit() override {
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) return;
    for (auto& [id, pr] : leader->progress) {
      if (pr.commit_sent() >= log_.committed()) continue;
      if (pr.state() != ProgressState::kReplicate || pr.next() <= log_.LastIndex()) continue;
      SendAppend(*leader, id, /*allow_empty=*/true);
    }
  }

  absl::Status TransferLeadership(uint64_t target) override {
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", config_.id, " is not the leader (leader: ", leader_, ")"));
    }
    if (target == config_.id) return absl::OkStatus();
    if (!voters_.Contains(target)) {
      return absl::InvalidArgumentError(absl::StrCat("node ", target, " is not a voter"));
    }
    leader->transfer_target = target;
    // The transfer gives up after one election timeout (thesis §3.10).
    election_elapsed_ = 0;
    Progress& pr = leader->progress.at(target);
    if (pr.match() == log_.LastIndex()) {
      SendTimeoutNow(target);
    } else {
      SendAppend(*leader, target, /*allow_empty=*/false);
    }
    return absl::OkStatus();
  }

  void ReportSnapshotFailure(uint64_t peer) override {
    auto* leader = std::get_if<LeaderRole>(&role_);
    if (leader == nullptr) return;
    auto it = leader->progress.find(peer);
    if (it == leader->progress.end() || it->second.state() != ProgressState::kSnapshot) return;
    // Probe again on the next heartbeat answer rather than at once: an
    // unreachable peer must not turn into a tight resend loop.
    it->second.BecomeProbe();
  }

  // ---- Output ----

  bool HasReady() const override {
    if (const auto* leader = std::get_if<LeaderRole>(&role_)) {
      if (leader->broadcast_pending || leader->read_round_pending) return true;
    }
    if (log_.pending_snapshot() && !snapshot_in_ready_) return true;
    return !log_.unstable().empty() || !SameHardState(CurrentHardState(), prev_hard_state_) ||
           log_.HasCommittedEntries() || !msgs_send_now_.empty() ||
           !msgs_after_persist_.empty() || !read_states_.empty() || !dropped_reads_.empty();
  }

  Ready GetReady() override {
    if (auto* leader = std::get_if<LeaderRole>(&role_)) {
      if (leader->broadcast_pending) {
        leader->broadcast_pending = false;
        BroadcastAppend(*leader);
      }
      if (leader->read_round_pending) {
        leader->read_round_pending = false;
        ++read_round_;
        SendReadRound(*leader);
        AdvanceReads(*leader);
      }
    }
    Ready rd;
    if (log_.pending_snapshot() && !snapshot_in_ready_) {
      rd.snapshot = *log_.pending_snapshot();
      snapshot_in_ready_ = true;
    }
    rd.entries = log_.unstable();
    HardState hs = CurrentHardState();
    if (!SameHardState(hs, prev_hard_state_)) {
      rd.must_sync = hs.term() != prev_hard_state_.term() || hs.vote() != prev_hard_state_.vote();
      rd.hard_state = hs;
      prev_hard_state_ = hs;
    }
    if (!rd.entries.empty() || rd.snapshot.has_value()) rd.must_sync = true;
    rd.committed_entries = log_.TakeCommittedEntries(config_.max_committed_bytes_per_ready);
    rd.messages_send_now = std::move(msgs_send_now_);
    rd.messages_after_persist = std::move(msgs_after_persist_);
    rd.read_states = std::move(read_states_);
    rd.dropped_reads = std::move(dropped_reads_);
    msgs_send_now_.clear();
    msgs_after_persist_.clear();
    read_states_.clear();
    dropped_reads_.clear();
    ready_last_entry_ = rd.entries.empty() ? 0 : rd.entries.back().index();
    return rd;
  }

  void Advance() override {
    if (snapshot_in_ready_) {
      log_.SnapshotPersisted();
      snapshot_in_ready_ = false;
    }
    if (ready_last_entry_ != 0) log_.StableTo(ready_last_entry_);
    ready_last_entry_ = 0;
    if (auto* leader = std::get_if<LeaderRole>(&role_)) {
      // Our own disk write is done: we now count toward the quorum for it.
      if (MaybeCommit(*leader)) BroadcastCommit(*leader);
    }
  }

  NodeStatus Status() const override {
    NodeStatus s;
    s.id = config_.id;
    s.role = CurrentRole();
    s.term = term_;
    s.vote = vote_;
    s.leader = leader_;
    s.commit = log_.committed();
    s.applied = log_.applied();
    s.last_index = log_.LastIndex();
    s.first_index = log_.FirstIndex();
    for (uint64_t v : voters_.voters()) s.conf_state.add_voters(v);
    for (uint64_t l : learners_) s.conf_state.add_learners(l);
    if (const auto* leader = std::get_if<LeaderRole>(&role_)) {
      s.transfer_target = leader->transfer_target;
      PeerStatus self;
      self.match = log_.persisted();
      self.next = log_.LastIndex() + 1;
      self.state = ProgressState::kReplicate;
      s.peers[config_.id] = self;
      for (const auto& [id, pr] : leader->progress) {
        PeerStatus p;
        p.match = pr.match();
        p.next = pr.next();
        p.state = pr.state();
        p.inflight = pr.inflight();
        p.ticks_since_contact = pr.ticks_since_contact();
        s.peers[id] = p;
      }
    }
    return s;
  }

  NodeSummary Summary() const override {
    return NodeSummary{CurrentRole(), term_, leader_, log_.committed()};
  }

  absl::Status CheckInvariants() const override {
    if (!log_.violation().empty()) return absl::InternalError(log_.violation());
    if (log_.committed() > log_.LastIndex()) {
      return absl::InternalError(absl::StrCat("commit ", log_.committed(), " beyond last index ",
                                              log_.LastIndex()));
    }
    if (log_.applied() > log_.committed()) {
      return absl::InternalError(
          absl::StrCat("applied ", log_.applied(), " beyond commit ", log_.committed()));
    }
    if (term_ < checked_term_) {
      return absl::InternalError(absl::StrCat("term went back from ", checked_term_, " to ", term_));
    }
    if (log_.committed() < checked_commit_) {
      return absl::InternalError(
          absl::StrCat("commit went back from ", checked_commit_, " to ", log_.committed()));
    }
    if (log_.LastTerm() > term_) {
      return absl::InternalError(
          absl::StrCat("last log term ", log_.LastTerm(), " above current term ", term_));
    }
    if (const auto* leader = std::get_if<LeaderRole>(&role_)) {
      if (vote_ != config_.id || leader_ != config_.id) {
        return absl::InternalError(absl::StrCat("leader of term ", term_, " voted for ", vote_,
                                                " and believes the leader is ", leader_));
      }
      for (const auto& [id, pr] : leader->progress) {
        if (pr.match() >= pr.next() || pr.match() > log_.LastIndex()) {
          return absl::InternalError(absl::StrCat("progress of ", id, ": match ", pr.match(),
                                                  " next ", pr.next(), " last ",
                                                  log_.LastIndex()));
        }
      }
    }
    checked_term_ = term_;
    checked_commit_ = log_.committed();
    return absl::OkStatus();
  }

 private:
  enum class CampaignKind { kPreVote, kElection, kTransfer };

  Role CurrentRole() const {
    if (std::holds_alternative<LeaderRole>(role_)) return Role::kLeader;
    if (std::holds_alternative<CandidateRole>(role_)) return Role::kCandidate;
    if (std::holds_alternative<PreCandidateRole>(role_)) return Role::kPreCandidate;
    return Role::kFollower;
  }

  HardState CurrentHardState() const {
    HardState hs;
    hs.set_term(term_);
    hs.set_vote(vote_);
    hs.set_commit(log_.committed());
    return hs;
  }

  bool Promotable() const { return voters_.Contains(config_.id); }

  bool CommittedInCurrentTerm() const { return log_.TermOr0(log_.committed()) == term_; }

  Message Envelope(uint64_t to) const {
    Message m;
    m.set_from(config_.id);
    m.set_to(to);
    return m;
  }

  void ResetElectionTimer() {
    election_elapsed_ = 0;
    randomized_election_timeout_ =
        config_.election_ticks + static_cast<int>(rng_.Next() % config_.election_ticks);
  }

  // ---- Role changes ----

  void BecomeFollower(uint64_t term, uint64_t leader) {
    if (auto* old = std::get_if<LeaderRole>(&role_)) {
      for (auto& read : old->reads) dropped_reads_.push_back(std::move(read.context));
    }
    if (term != term_) {
      term_ = term;
      vote_ = 0;
    }
    role_ = FollowerRole{};
    leader_ = leader;
    ResetElectionTimer();
  }

  void Campaign(CampaignKind kind) {
    const bool pre = kind == CampaignKind::kPreVote;
    uint64_t campaign_term;
    std::map<uint64_t, bool>* votes;
    if (pre) {
      role_ = PreCandidateRole{};
      votes = &std::get<PreCandidateRole>(role_).votes;
      campaign_term = term_ + 1;
    } else {
      if (auto* old = std::get_if<LeaderRole>(&role_)) {
        for (auto& read : old->reads) dropped_reads_.push_back(std::move(read.context));
      }
      role_ = CandidateRole{};
      votes = &std::get<CandidateRole>(role_).votes;
      term_ += 1;
      vote_ = config_.id;
      campaign_term = term_;
    }
    leader_ = 0;
    ResetElectionTimer();
    (*votes)[config_.id] = true;
    if (TallyVotes(*votes) == VoteResult::kWon) {
      if (pre) {
        Campaign(CampaignKind::kElection);
      } else {
        BecomeLeader();
      }
      return;
    }
    for (uint64_t id : voters_.voters()) {
      if (id == config_.id) continue;
      Message m = Envelope(id);
      auto* req = m.mutable_vote_request();
      req->set_term(campaign_term);
      req->set_candidate_id(config_.id);
      req->set_last_log_index(log_.LastIndex());
      req->set_last_log_term(log_.LastTerm());
      req->set_pre_vote(pre);
      req->set_leadership_transfer(kind == CampaignKind::kTransfer);
      // A real vote request promises our own persisted vote for ourselves.
      msgs_after_persist_.push_back(std::move(m));
    }
  }

  VoteResult TallyVotes(const std::map<uint64_t, bool>& votes) const {
    return voters_.Tally([&](uint64_t id) -> std::optional<bool> {
      auto it = votes.find(id);
      if (it == votes.end()) return std::nullopt;
      return it->second;
    });
  }

  void BecomeLeader() {
    LeaderRole leader;
    const uint64_t next = log_.LastIndex() + 1;
    for (uint64_t id : voters_.voters()) {
      if (id != config_.id) leader.progress.emplace(id, Progress(next, config_.max_inflight_appends));
    }
    for (uint64_t id : learners_) {
      if (id != config_.id) leader.progress.emplace(id, Progress(next, config_.max_inflight_appends));
    }
    role_ = std::move(leader);
    leader_ = config_.id;
    election_elapsed_ = 0;
    ChooseEager(std::get<LeaderRole>(role_), /*stalled=*/{});
    // §8: a new leader commits a no-op of its own term so that it learns the
    // commit index, and so that earlier-term entries become committed (§5.4.2).
    Entry noop;
    noop.set_term(term_);
    noop.set_index(next);
    noop.set_type(v1::ENTRY_NOOP);
    std::vector<Entry> entries;
    entries.push_back(std::move(noop));
    log_.Append(std::move(entries));
    std::get<LeaderRole>(role_).broadcast_pending = true;
  }

  // ---- Votes (any role) ----

  void HandleVoteRequest(const Message& msg) {
    const auto& req = msg.vote_request();
    const uint64_t from = msg.from();
    const bool can_vote = vote_ == from || (vote_ == 0 && leader_ == 0) ||
                          (req.pre_vote() && req.term() > term_);
    const bool grant = can_vote && log_.IsUpToDate(req.last_log_index(), req.last_log_term());
    Message out = Envelope(from);
    auto* resp = out.mutable_vote_response();
    resp->set_pre_vote(req.pre_vote());
    resp->set_granted(grant);
    // A grant answers in the candidate's term, so it is not taken for stale.
    resp->set_term(grant ? req.term() : term_);
    if (grant && !req.pre_vote()) {
      vote_ = from;
      election_elapsed_ = 0;
      if (config_.testing_bugs.vote_before_persist) {
        msgs_send_now_.push_back(std::move(out));
        return;
      }
    }
    msgs_after_persist_.push_back(std::move(out));
  }

  // ---- Follower ----

  void StepFollower(Message& msg) {
    switch (msg.body_case()) {
      case Message::kAppendRequest:
        election_elapsed_ = 0;
        leader_ = msg.from();
        HandleAppend(msg);
        break;
      case Message::kSnapshotRequest:
        election_elapsed_ = 0;
        leader_ = msg.from();
        HandleSnapshot(msg);
        break;
      case Message::kTimeoutNow:
        if (Promotable()) Campaign(CampaignKind::kTransfer);
        break;
      default:
        break;  // stale responses from an earlier role
    }
  }

  // Takes the message's entries (moved into the log, not copied). The
  // repeated field keeps its size, so req.entries().empty() below still
  // tells a commit-only append.
  void HandleAppend(Message& msg) {
    auto& req = *msg.mutable_append_request();
    Message out = Envelope(msg.from());
    auto* resp = out.mutable_append_response();
    resp->set_term(term_);
    resp->set_read_round(req.read_round());
    if (req.heartbeat()) {
      resp->set_heartbeat(true);
      resp->set_success(true);
      log_.CommitTo(std::min(req.leader_commit(), log_.LastIndex()));
    } else if (req.prev_log_index() < log_.committed()) {
      // Everything up to our commit index matches any current leader's log.
      resp->set_success(true);
      resp->set_match_index(log_.committed());
    } else if (auto last_new = log_.MaybeAppend(
                   req.prev_log_index(), req.prev_log_term(),
                   std::vector<Entry>(std::make_move_iterator(req.mutable_entries()->begin()),
                                      std::make_move_iterator(req.mutable_entries()->end())),
                   config_.testing_bugs.skip_log_consistency_check)) {
      log_.CommitTo(std::min(req.leader_commit(), *last_new));
      resp->set_success(true);
      resp->set_match_index(*last_new);
    } else {
      resp->set_success(false);
      resp->set_reject_index(req.prev_log_index());
      if (req.prev_log_index() > log_.LastIndex()) {
        resp->set_conflict_index(log_.LastIndex() + 1);
      } else {
        resp->set_conflict_term(log_.TermOr0(req.prev_log_index()));
        resp->set_conflict_index(
            log_.FirstIndexOfTermAt(req.prev_log_index(), log_.committed() + 1));
      }
    }
    if (req.commit_only() && req.entries().empty() && resp->success()) return;
    // An acknowledgement promises that the entries are on disk.
    msgs_after_persist_.push_back(std::move(out));
  }

  // The leader's log no longer has what we need; it sent a snapshot whose
  // data the transport has already received and staged for the driver.
  void HandleSnapshot(const Message& msg) {
    const SnapshotMetadata& meta = msg.snapshot_request().metadata();
    Message out = Envelope(msg.from());
    auto* resp = out.mutable_snapshot_response();
    resp->set_term(term_);
    resp->set_success(true);
    if (meta.index() <= log_.committed()) {
      // Stale or duplicate: we are already past it.
      resp->set_last_index(log_.committed());
    } else if (log_.MatchTerm(meta.index(), meta.term())) {
      // We hold the snapshot's last entry, so our log matches the leader's up
      // to it, and everything in a snapshot is committed.
      log_.CommitTo(meta.index());
      resp->set_last_index(meta.index());
    } else {
      log_.Restore(meta);
      snapshot_in_ready_ = false;
      ApplyConfState(meta.conf_state());
      resp->set_last_index(meta.index());
    }
    msgs_after_persist_.push_back(std::move(out));
  }

  void ApplyConfState(const ConfState& conf) {
    voters_ = MajorityConfig(std::set<uint64_t>(conf.voters().begin(), conf.voters().end()));
    learners_ = std::set<uint64_t>(conf.learners().begin(), conf.learners().end());
  }

  // ---- Candidates ----

  void StepPreCandidate(PreCandidateRole& role, Message& msg) {
    switch (msg.body_case()) {
      case Message::kAppendRequest:
      case Message::kSnapshotRequest:
        BecomeFollower(term_, msg.from());
        StepFollower(msg);
        break;
      case Message::kVoteResponse: {
        const auto& resp = msg.vote_response();
        if (!resp.pre_vote()) break;
        if (resp.granted() ? resp.term() != term_ + 1 : resp.term() != term_) break;
        role.votes[msg.from()] = resp.granted();
        const VoteResult result = TallyVotes(role.votes);
        if (result == VoteResult::kWon) {
          Campaign(CampaignKind::kElection);
        } else if (result == VoteResult::kLost) {
          BecomeFollower(term_, 0);
        }
        break;
      }
      default:
        break;
    }
  }

  void StepCandidate(CandidateRole& role, Message& msg) {
    switch (msg.body_case()) {
      case Message::kAppendRequest:
      case Message::kSnapshotRequest:
        // §5.2: another server established itself as leader of this term.
        BecomeFollower(term_, msg.from());
        StepFollower(msg);
        break;
      case Message::kVoteResponse: {
        const auto& resp = msg.vote_response();
        if (resp.pre_vote() || resp.term() != term_) break;
        role.votes[msg.from()] = resp.granted();
        const VoteResult result = TallyVotes(role.votes);
        if (result == VoteResult::kWon) {
          BecomeLeader();
        } else if (result == VoteResult::kLost) {
          BecomeFollower(term_, 0);
        }
        break;
      }
      default:
        break;
    }
  }

  // ---- Leader ----

  void TickLeader(LeaderRole& leader) {
    ++election_elapsed_;
    ++leader.heartbeat_elapsed;
    for (auto& [id, pr] : leader.progress) pr.Tick();
    if (election_elapsed_ >= config_.election_ticks) {
      election_elapsed_ = 0;
      if (config_.check_quorum) {
        const bool active = voters_.QuorumActive([&](uint64_t id) {
          if (id == config_.id) return true;
          auto it = leader.progress.find(id);
          return it != leader.progress.end() && it->second.recent_active();
        });
        for (auto& [id, pr] : leader.progress) pr.ResetRecentActive();
        if (!active) {
          // §6.2 / thesis §3.6: a leader that cannot reach a quorum steps down
          // so that clients look for the real one.
          BecomeFollower(term_, 0);
          return;
        }
      }
      leader.transfer_target = 0;  // a transfer that took a whole timeout failed
    }
    if (config_.thrifty_replication) {
      std::set<uint64_t> stalled;
      for (uint64_t id : leader.eager) {
        if (leader.progress.at(id).match() < leader.last_index_at_tick) stalled.insert(id);
      }
      if (!stalled.empty()) ChooseEager(leader, stalled);
      leader.last_index_at_tick = log_.LastIndex();
    }
    if (leader.heartbeat_elapsed >= config_.heartbeat_ticks) {
      leader.heartbeat_elapsed = 0;
      BroadcastHeartbeat(leader);
    }
  }

  // A follower that gets new entries only with heartbeats (thrifty
  // replication). Probing, snapshot and transfer targets are never lazy.
  bool Lazy(const LeaderRole& leader, uint64_t id, const Progress& pr) const {
    return config_.thrifty_replication && pr.state() == ProgressState::kReplicate &&
           !leader.eager.contains(id) && id != leader.transfer_target;
  }

  // Makes `eager` the fewest voters that make a quorum with this node:
  // keeps those chosen before unless `stalled`, and adds the most
  // up-to-date other voters (lowest id among equals), which are sent what
  // they lack at once. With no other choice a stalled one stays.
  void ChooseEager(LeaderRole& leader, const std::set<uint64_t>& stalled) {
    if (!config_.thrifty_replication) return;
    const size_t needed = voters_.QuorumSize() - (voters_.Contains(config_.id) ? 1 : 0);
    std::set<uint64_t> eager;
    for (uint64_t id : leader.eager) {
      if (!stalled.contains(id) && leader.progress.contains(id)) eager.insert(id);
    }
    std::vector<std::pair<uint64_t, uint64_t>> candidates;  // (match, id)
    for (uint64_t id : voters_.voters()) {
      if (id == config_.id || eager.contains(id) || stalled.contains(id)) continue;
      candidates.emplace_back(leader.progress.at(id).match(), id);
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (uint64_t id : stalled) candidates.emplace_back(0, id);  // the last resort
    std::vector<uint64_t> added;
    for (const auto& [match, id] : candidates) {
      if (eager.size() >= needed) break;
      if (eager.insert(id).second && !leader.eager.contains(id)) added.push_back(id);
    }
    leader.eager = std::move(eager);
    for (uint64_t id : added) SendAppend(leader, id, /*allow_empty=*/false);
  }

  void StepLeader(LeaderRole& leader, const Message& msg) {
    auto it = leader.progress.find(msg.from());
    if (it == leader.progress.end()) return;  // not a member
    Progress& pr = it->second;
    switch (msg.body_case()) {
      case Message::kAppendResponse:
        HandleAppendResponse(leader, msg.from(), pr, msg.append_response());
        break;
      case Message::kSnapshotResponse:
        pr.MarkContact();
        if (msg.snapshot_response().success()) pr.MaybeUpdate(msg.snapshot_response().last_index());
        pr.BecomeProbe();
        SendAppend(leader, msg.from(), /*allow_empty=*/true);
        break;
      default:
        break;
    }
  }

  void HandleAppendResponse(LeaderRole& leader, uint64_t from, Progress& pr,
                            const v1::AppendEntriesResponse& resp) {
    pr.MarkContact();
    pr.AckReadRound(resp.read_round());
    if (resp.heartbeat()) {
      pr.OnHeartbeatResponse();
      // The follower lags: appends may have been lost. An empty append at
      // `next` either succeeds or draws a rejection that restarts probing.
      // (A lazy follower gets that with its next heartbeat's append.)
      if (pr.match() < log_.LastIndex() && !Lazy(leader, from, pr)) {
        SendAppend(leader, from, /*allow_empty=*/true);
      }
    } else if (!resp.success()) {
      uint64_t hint = resp.conflict_index();
      if (resp.conflict_term() != 0) {
        // Fast backtracking: if we have entries of the follower's conflicting
        // term, our last one is where the two logs may still agree.
        const uint64_t j = log_.LastIndexWithTermAtMost(resp.reject_index(), resp.conflict_term());
        if (j >= log_.FirstIndex() && log_.TermOr0(j) == resp.conflict_term()) hint = j + 1;
      }
      if (hint == 0) hint = 1;
      const bool was_replicating = pr.state() == ProgressState::kReplicate;
      if (pr.MaybeDecreaseTo(resp.reject_index(), hint)) {
        if (was_replicating) pr.BecomeProbe();
        SendAppend(leader, from, /*allow_empty=*/true);
      }
    } else {
      const bool probing = pr.state() == ProgressState::kProbe;
      const bool updated = pr.MaybeUpdate(resp.match_index());
      if (pr.state() == ProgressState::kSnapshot && pr.match() >= pr.pending_snapshot()) {
        // The follower caught up past the snapshot some other way.
        pr.BecomeProbe();
        SendAppend(leader, from, /*allow_empty=*/false);
      } else if (updated || (probing && pr.match() == resp.match_index())) {
        if (probing) pr.BecomeReplicate();
        if (MaybeCommit(leader)) {
          BroadcastCommit(leader);
        } else if (!Lazy(leader, from, pr)) {
          SendAppend(leader, from, /*allow_empty=*/pr.commit_sent() < log_.committed());
        }
        if (leader.transfer_target == from && pr.match() == log_.LastIndex()) {
          SendTimeoutNow(from);
        }
      }
    }
    AdvanceReads(leader);
  }

  // Commits the highest index a quorum has persisted, if it is of our term
  // (§5.4.2: an earlier term's entry is committed only indirectly).
  bool MaybeCommit(LeaderRole& leader) {
    const uint64_t index = voters_.CommittedIndex([&](uint64_t id) -> uint64_t {
      if (id == config_.id) return log_.persisted();
      auto it = leader.progress.find(id);
      return it == leader.progress.end() ? 0 : it->second.match();
    });
    if (index <= log_.committed()) return false;
    if (log_.TermOr0(index) != term_ && !config_.testing_bugs.commit_previous_term_by_counting) {
      return false;
    }
    const bool first_in_term = !CommittedInCurrentTerm();
    log_.CommitTo(index);
    if (first_in_term && CommittedInCurrentTerm()) {
      for (auto& read : leader.reads) {
        if (read.index == 0) read.index = log_.committed();
      }
      AdvanceReads(leader);
    }
    return true;
  }

  // Sends entries from the follower's next index on, as flow control allows.
  void SendAppend(LeaderRole& leader, uint64_t to, bool allow_empty) {
    Progress& pr = leader.progress.at(to);
    bool sent_any = false;
    while (!pr.IsPaused()) {
      const uint64_t prev = pr.next() - 1;
      auto prev_term = log_.Term(prev);
      auto entries = log_.Entries(pr.next(), log_.LastIndex() + 1, config_.max_append_bytes);
      if (!prev_term.ok() || !entries.ok()) {
        // The entries the follower needs are compacted away.
        SendSnapshot(pr, to);
        return;
      }
      if (entries->empty() && (sent_any || !allow_empty)) return;
      Message m = Envelope(to);
      auto* req = m.mutable_append_request();
      req->set_term(term_);
      req->set_leader_id(config_.id);
      req->set_prev_log_index(prev);
      req->set_prev_log_term(*prev_term);
      req->set_leader_commit(log_.committed());
      const uint64_t last = entries->empty() ? prev : entries->back().index();
      const bool carried = !entries->empty();
      // Replicating, an empty append only announces the commit index, and
      // its success would tell us nothing: the follower keeps it to itself
      // (per put, two messages and two wake-ups of this node fewer).
      req->set_commit_only(!carried && pr.state() == ProgressState::kReplicate);
      for (auto& e : *entries) *req->add_entries() = std::move(e);
      pr.SentEntries(last, carried);
      pr.SentCommit(log_.committed());
      msgs_send_now_.push_back(std::move(m));
      sent_any = true;
      if (!carried || pr.state() != ProgressState::kReplicate) return;
    }
  }

  // Tells followers about a new commit index. A follower with appends in
  // flight learns it from the answer to its next acknowledgement instead, so
  // under load a commit costs no extra messages.
  // Thrifty, no follower is told at once: each learns it with the next
  // append or heartbeat, when it asks for a read index (SendEntriesNow), or
  // once commits stand still (AnnounceCommit). A commit needs no such
  // message, and one client's put paid for it in its own critical path: a
  // wake-up of the follower, and of this node again for the window update
  // gRPC answers every message with.
  void BroadcastCommit(LeaderRole& leader) {
    if (config_.thrifty_replication) return;
    for (auto& [id, pr] : leader.progress) {
      if (pr.state() == ProgressState::kReplicate && pr.inflight() > 0) continue;
      SendAppend(leader, id, /*allow_empty=*/true);
    }
  }

  void BroadcastAppend(LeaderRole& leader) {
    for (auto& [id, pr] : leader.progress) {
      if (!Lazy(leader, id, pr)) SendAppend(leader, id, /*allow_empty=*/true);
    }
  }

  // Heartbeats carry no entries and skip the consistency check; their commit
  // never runs past what the follower is known to hold.
  void BroadcastHeartbeat(LeaderRole& leader) {
    const uint64_t round = leader.reads.empty() ? 0 : read_round_;
    for (auto& [id, pr] : leader.progress) {
      // A lazy follower's entries, and the commit index, travel in an append
      // next to each heartbeat; while it has not acknowledged them all, that
      // append goes even with no new entries, so that lost ones are found
      // (as for the others, on their heartbeat answers).
      if (Lazy(leader, id, pr)) SendAppend(leader, id, pr.match() < log_.LastIndex());
      SendHeartbeat(id, pr, round);
    }
  }

  // A ReadIndex round needs a quorum's acknowledgement, not every voter's, and
  // each voter asked costs a message and an answer on both ends: the round
  // goes to the fewest voters that make a quorum with this node, those that
  // acknowledged the latest round first (they answer; lowest id among
  // equals). Periodic heartbeats carry the round to everyone
  // (BroadcastHeartbeat), so a chosen voter that does not answer delays the
  // round by one heartbeat interval at most, and the voters that did answer
  // are chosen from then on.
  void SendReadRound(LeaderRole& leader) {
    std::vector<std::pair<uint64_t, uint64_t>> candidates;  // (round acked, id)
    for (const auto& [id, pr] : leader.progress) {
      if (voters_.Contains(id)) candidates.emplace_back(pr.read_round_acked(), id);
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    std::set<uint64_t> asked;
    const auto quorum_asked = [&] {
      return voters_.QuorumActive(
          [&](uint64_t id) { return id == config_.id || asked.count(id) > 0; });
    };
    for (const auto& [round_acked, id] : candidates) {
      if (quorum_asked()) break;
      asked.insert(id);
    }
    for (uint64_t id : asked) SendHeartbeat(id, leader.progress.at(id), read_round_);
  }

  void SendHeartbeat(uint64_t to, Progress& pr, uint64_t read_round) {
    Message m = Envelope(to);
    auto* req = m.mutable_append_request();
    req->set_term(term_);
    req->set_leader_id(config_.id);
    req->set_heartbeat(true);
    req->set_leader_commit(std::min(log_.committed(), pr.match()));
    pr.SentCommit(req->leader_commit());
    req->set_read_round(read_round);
    msgs_send_now_.push_back(std::move(m));
  }

  // Announces the latest stored snapshot; the transport streams its data
  // (InstallSnapshot) and delivers this message after the last chunk.
  void SendSnapshot(Progress& pr, uint64_t to) {
    const SnapshotMetadata meta = storage_->Snapshot();
    pr.BecomeSnapshot(meta.index());
    Message m = Envelope(to);
    auto* req = m.mutable_snapshot_request();
    req->set_term(term_);
    req->set_leader_id(config_.id);
    *req->mutable_metadata() = meta;
    req->set_done(true);
    msgs_send_now_.push_back(std::move(m));
  }

  void SendTimeoutNow(uint64_t to) {
    Message m = Envelope(to);
    m.mutable_timeout_now()->set_term(term_);
    m.mutable_timeout_now()->set_leader_id(config_.id);
    msgs_send_now_.push_back(std::move(m));
  }

  // ReadIndex (thesis §6.4): a read is served once a quorum acknowledged a
  // heartbeat round sent after the read arrived, proving we were still leader.
  void AdvanceReads(LeaderRole& leader) {
    if (leader.reads.empty()) return;
    const uint64_t confirmed = voters_.CommittedIndex([&](uint64_t id) -> uint64_t {
      if (id == config_.id) return read_round_;
      auto it = leader.progress.find(id);
      return it == leader.progress.end() ? 0 : it->second.read_round_acked();
    });
    while (!leader.reads.empty() && leader.reads.front().round <= confirmed &&
           leader.reads.front().index != 0) {
      PendingRead& read = leader.reads.front();
      read_states_.push_back(ReadState{read.index, std::move(read.context)});
      leader.reads.pop_front();
    }
  }

  // ---- State ----

  // Constant after construction.
  const Config config_;
  const LogStorage* const storage_;

  Rng rng_;
  RaftLog log_;
  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t leader_ = 0;
  MajorityConfig voters_;
  std::set<uint64_t> learners_;
  std::variant<FollowerRole, PreCandidateRole, CandidateRole, LeaderRole> role_;
  int election_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  // Heartbeat rounds for ReadIndex; never reset, so a round number is never
  // reused across leaderships.
  uint64_t read_round_ = 0;

  // Output accumulated for the next Ready.
  std::vector<Message> msgs_send_now_;
  std::vector<Message> msgs_after_persist_;
  std::vector<ReadState> read_states_;
  std::vector<std::string> dropped_reads_;
  HardState prev_hard_state_;
  uint64_t ready_last_entry_ = 0;
  bool snapshot_in_ready_ = false;

  // What CheckInvariants saw last time, to check monotonicity.
  mutable uint64_t checked_term_ = 0;
  mutable uint64_t checked_commit_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const Config& config,
                                                   const LogStorage* storage) {
  if (config.id == 0) return absl::InvalidArgumentError("node id must be non-zero");
  if (config.election_ticks < 1 || config.heartbeat_ticks < 1 ||
      config.heartbeat_ticks >= config.election_ticks) {
    return absl::InvalidArgumentError(
        absl::StrCat("need 1 <= heartbeat_ticks (", config.heartbeat_ticks,
                     ") < election_ticks (", config.election_ticks, ")"));
  }
  if (config.max_inflight_appends < 1) {
    return absl::InvalidArgumentError("max_inflight_appends must be at least 1");
  }
  if (storage == nullptr) return absl::InvalidArgumentError("no log storage");
  auto init = storage->GetInitialState();
  if (!init.ok()) return init.status();
  uint64_t commit = init->hard_state.commit();
  if (commit > storage->LastIndex()) {
    return absl::DataLossError(absl::StrCat("persisted commit index ", commit,
                                            " is beyond the last log index ",
                                            storage->LastIndex()));
  }
  if (config.applied > storage->LastIndex()) {
    return absl::DataLossError(absl::StrCat("state machine applied index ", config.applied,
                                            " is beyond the last log index ",
                                            storage->LastIndex()));
  }
  if (config.applied + 1 < storage->FirstIndex()) {
    return absl::DataLossError(absl::StrCat(
        "state machine applied index ", config.applied, " is behind the log's first index ",
        storage->FirstIndex(), ": the entries in between were compacted away; restore the "
        "state machine from the latest snapshot"));
  }
  // Applied entries were committed even if the commit index was not yet
  // persisted when they were applied.
  commit = std::max(commit, config.applied);
  commit = std::max(commit, storage->FirstIndex() - 1);
  return std::unique_ptr<Node>(new NodeImpl(config, storage, *init, commit));
}

}  // namespace raftkv::raft
