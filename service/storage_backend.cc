// OpenBackends on storage/ (LevelDB): thin adapters from storage::LogStore and
// storage::StateMachine to the interfaces the Raft and apply threads use.
//
// Layout of a data directory: DIR/log (the Raft log) and DIR/kv (the state
// machine). The log records (cluster id, node id) on first start; a data
// directory of another node or cluster is refused before anything is written.
#include "absl/strings/str_cat.h"
#include "service/backend.h"
#include "spdlog/spdlog.h"
#include "storage/log_store.h"
#include "storage/state_machine.h"

namespace raftkv::service {
namespace {

class LevelDbLog : public LogBackend {
 public:
  explicit LevelDbLog(std::unique_ptr<storage::LogStore> store) : store_(std::move(store)) {}
  const raft::LogStorage* view() const override { return store_.get(); }
  absl::Status Save(std::vector<raft::Entry> entries,
                    const std::optional<raft::HardState>& hard_state, bool sync) override {
    return store_->Save(std::move(entries), hard_state, sync);
  }

 private:
  std::unique_ptr<storage::LogStore> store_;
};

class LevelDbStateMachine : public StateMachineBackend {
 public:
  explicit LevelDbStateMachine(std::unique_ptr<storage::StateMachine> sm) : sm_(std::move(sm)) {}
  uint64_t applied_index() const override { return sm_->applied_index(); }
  int64_t revision() const override { return sm_->revision(); }
  absl::Status Validate(const v1::Command& command) const override {
    return sm_->Validate(command);
  }
  absl::StatusOr<std::vector<v1::CommandResult>> Apply(
      const std::vector<raft::Entry>& entries,
      absl::FunctionRef<bool(uint64_t index)> wants_prev_kv) override {
    return sm_->Apply(entries, wants_prev_kv);
  }
  absl::Status Sync() override { return sm_->Sync(); }
  absl::StatusOr<std::optional<v1::KeyValue>> Get(const std::string& key) const override {
    return sm_->Get(key);
  }
  absl::Status Range(const std::string& start, const std::string& end, int64_t limit,
                     std::vector<v1::KeyValue>* out, bool* more) const override {
    absl::StatusOr<storage::StateMachine::RangeResult> r =
        sm_->Range(start, end, static_cast<size_t>(limit));
    if (!r.ok()) return r.status();
    *out = std::move(r->kvs);
    *more = r->more;
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<storage::StateMachine> sm_;
};

}  // namespace

absl::StatusOr<Backends> OpenBackends(const std::string& data_dir, uint64_t cluster_id,
                                      uint64_t node_id,
                                      const std::vector<uint64_t>& initial_voters) {
  absl::StatusOr<std::unique_ptr<storage::LogStore>> log =
      storage::LogStore::Open(data_dir + "/log", storage::LogStoreOptions{});
  if (!log.ok()) return log.status();
  for (const std::string& note : (*log)->open_notes()) spdlog::warn("raft log store: {}", note);
  if (absl::Status s = (*log)->CheckIdentity(absl::StrCat(cluster_id), node_id); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(s.message(), " [raftd --id=", node_id, " --cluster_id=", cluster_id, "]"));
  }
  if ((*log)->IsEmpty()) {
    raft::ConfState conf;
    for (uint64_t id : initial_voters) conf.add_voters(id);
    if (absl::Status s = (*log)->Bootstrap(conf); !s.ok()) return s;
    spdlog::info("bootstrapped a new log in {}/log with {} voters", data_dir,
                 initial_voters.size());
  }
  absl::StatusOr<std::unique_ptr<storage::StateMachine>> sm =
      storage::StateMachine::Open(data_dir + "/kv", storage::StateMachineOptions{});
  if (!sm.ok()) return sm.status();
  Backends b;
  b.log = std::make_unique<LevelDbLog>(*std::move(log));
  b.state_machine = std::make_unique<LevelDbStateMachine>(*std::move(sm));
  return b;
}

}  // namespace raftkv::service
