// In-memory LogBackend and StateMachineBackend, for driver tests only.
#include <map>

#include "absl/strings/str_cat.h"
#include "raft/memory_storage.h"
#include "service/backend.h"

namespace raftkv::service {
namespace {

class MemoryLog : public LogBackend {
 public:
  explicit MemoryLog(const raft::ConfState& conf) : storage_(conf) {}
  const raft::LogStorage* view() const override { return &storage_; }
  absl::Status Save(const std::vector<raft::Entry>& entries,
                    const std::optional<raft::HardState>& hard_state) override {
    if (!entries.empty()) {
      if (absl::Status s = storage_.Append(entries); !s.ok()) return s;
    }
    if (hard_state) storage_.SetHardState(*hard_state);
    return absl::OkStatus();
  }

 private:
  raft::MemoryStorage storage_;
};

class MemoryStateMachine : public StateMachineBackend {
 public:
  uint64_t applied_index() const override { return applied_; }
  int64_t revision() const override { return revision_; }

  absl::Status Validate(const v1::Command& c) const override {
    const std::string* key = nullptr;
    switch (c.op_case()) {
      case v1::Command::kPut: key = &c.put().key(); break;
      case v1::Command::kDelete: key = &c.delete_().key(); break;
      case v1::Command::kCompareAndSwap: key = &c.compare_and_swap().key(); break;
      default: return absl::InvalidArgumentError("command has no operation");
    }
    if (key->empty()) return absl::InvalidArgumentError("key is empty");
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::CommandResult>> Apply(
      const std::vector<raft::Entry>& entries) override {
    std::vector<v1::CommandResult> results;
    for (const raft::Entry& e : entries) {
      v1::CommandResult r;
      if (e.type() == v1::ENTRY_NORMAL && !e.data().empty()) {
        v1::Command c;
        if (!c.ParseFromString(e.data())) {
          r.set_code(v1::CommandResult::INVALID);
          r.set_error("entry does not hold a Command");
        } else if (c.client_id() != 0 && sessions_.count(c.client_id()) &&
                   sessions_[c.client_id()].first >= c.sequence()) {
          r = sessions_[c.client_id()].second;
        } else {
          r = ApplyOne(c);
          if (c.client_id() != 0) sessions_[c.client_id()] = {c.sequence(), r};
        }
      }
      r.set_revision(revision_);
      applied_ = e.index();
      results.push_back(std::move(r));
    }
    return results;
  }

  absl::StatusOr<std::optional<v1::KeyValue>> Get(const std::string& key) const override {
    auto it = kv_.find(key);
    if (it == kv_.end()) return std::optional<v1::KeyValue>();
    return std::optional<v1::KeyValue>(it->second);
  }

  absl::Status Range(const std::string& start, const std::string& end, int64_t limit,
                     std::vector<v1::KeyValue>* out, bool* more) const override {
    *more = false;
    for (auto it = kv_.lower_bound(start); it != kv_.end(); ++it) {
      if (!end.empty() && it->first >= end) break;
      if (static_cast<int64_t>(out->size()) >= limit) {
        *more = true;
        break;
      }
      out->push_back(it->second);
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override { return absl::OkStatus(); }

 private:
  v1::CommandResult ApplyOne(const v1::Command& c) {
    v1::CommandResult r;
    auto write = [&](const std::string& key, const std::string& value) {
      ++revision_;
      auto it = kv_.find(key);
      if (it != kv_.end()) *r.mutable_prev_kv() = it->second;
      v1::KeyValue& kv = kv_[key];
      if (it == kv_.end()) {
        kv.set_key(key);
        kv.set_create_revision(revision_);
      }
      kv.set_value(value);
      kv.set_mod_revision(revision_);
      kv.set_version(kv.version() + 1);
    };
    switch (c.op_case()) {
      case v1::Command::kPut:
        write(c.put().key(), c.put().value());
        break;
      case v1::Command::kDelete: {
        auto it = kv_.find(c.delete_().key());
        if (it == kv_.end()) {
          r.set_code(v1::CommandResult::NOT_FOUND);
        } else {
          ++revision_;
          *r.mutable_prev_kv() = it->second;
          kv_.erase(it);
        }
        break;
      }
      case v1::Command::kCompareAndSwap: {
        const auto& cas = c.compare_and_swap();
        auto it = kv_.find(cas.key());
        bool ok = false;
        switch (cas.expected_case()) {
          case v1::CompareAndSwapCommand::kExpectedValue:
            ok = it != kv_.end() && it->second.value() == cas.expected_value();
            break;
          case v1::CompareAndSwapCommand::kExpectedModRevision:
            ok = it != kv_.end() && it->second.mod_revision() == cas.expected_mod_revision();
            break;
          case v1::CompareAndSwapCommand::kExpectAbsent:
            ok = it == kv_.end();
            break;
          default:
            break;
        }
        if (!ok) {
          r.set_code(v1::CommandResult::COMPARE_FAILED);
          if (it != kv_.end()) *r.mutable_prev_kv() = it->second;
        } else {
          write(cas.key(), cas.new_value());
        }
        break;
      }
      default:
        r.set_code(v1::CommandResult::INVALID);
        r.set_error("command has no operation");
    }
    return r;
  }

  std::map<std::string, v1::KeyValue> kv_;
  std::map<uint64_t, std::pair<uint64_t, v1::CommandResult>> sessions_;
  uint64_t applied_ = 0;
  int64_t revision_ = 0;
};

}  // namespace

Backends MemoryBackends(const std::vector<uint64_t>& initial_voters) {
  raft::ConfState conf;
  for (uint64_t id : initial_voters) conf.add_voters(id);
  Backends b;
  b.log = std::make_unique<MemoryLog>(conf);
  b.state_machine = std::make_unique<MemoryStateMachine>();
  return b;
}

}  // namespace raftkv::service
