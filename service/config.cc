#include "service/config.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace raftkv::service {

std::vector<uint64_t> NodeConfig::voter_ids() const {
  std::vector<uint64_t> ids;
  for (const auto& [id, addr] : members) ids.push_back(id);
  return ids;
}

absl::StatusOr<std::map<uint64_t, PeerAddress>> ParseInitialCluster(const std::string& spec) {
  std::map<uint64_t, PeerAddress> out;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<absl::string_view> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    uint64_t id = 0;
    if (kv.size() != 2 || !absl::SimpleAtoi(kv[0], &id) || id == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial_cluster: bad member \"", item,
                       "\": want ID=PEER_HOST:PORT/CLIENT_HOST:PORT with ID a positive integer"));
    }
    std::vector<absl::string_view> addrs = absl::StrSplit(kv[1], '/');
    if (addrs.size() != 2 || addrs[0].empty() || addrs[1].empty() ||
        addrs[0].find(':') == absl::string_view::npos ||
        addrs[1].find(':') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--initial_cluster: bad addresses for member ",
                                                     id, " (\"", kv[1],
                                                     "\"): want PEER_HOST:PORT/CLIENT_HOST:PORT"));
    }
    if (out.count(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial_cluster: member ", id, " is listed twice"));
    }
    out[id] = PeerAddress{std::string(addrs[0]), std::string(addrs[1])};
  }
  if (out.empty()) return absl::InvalidArgumentError("--initial_cluster is empty");
  return out;
}

absl::Status ValidateConfig(const NodeConfig& c) {
  if (c.id == 0) return absl::InvalidArgumentError("--id must be a positive integer");
  if (c.cluster_id == 0) return absl::InvalidArgumentError("--cluster_id must be positive");
  if (!c.members.count(c.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--id=", c.id, " is not a member of --initial_cluster"));
  }
  if (c.data_dir.empty()) return absl::InvalidArgumentError("--data_dir is required");
  if (c.heartbeat_ms <= 0) return absl::InvalidArgumentError("--heartbeat_ms must be > 0");
  if (c.election_ms < 2 * c.heartbeat_ms) {
    return absl::InvalidArgumentError("--election_ms must be at least 2 * --heartbeat_ms");
  }
  struct Bounded {  // a flag that must lie in [0, max]
    const char* flag;
    int value;
    int max;
  };
  for (const Bounded& b : {Bounded{"kv_threads", c.kv_threads, 64},
                           Bounded{"kv_poll_us", c.kv_poll_us, 10000},
                           Bounded{"raft_poll_us", c.raft_poll_us, 10000}}) {
    if (b.value < 0 || b.value > b.max) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", b.flag, " must be in [0, ", b.max, "], not ", b.value));
    }
  }
  return absl::OkStatus();
}

}  // namespace raftkv::service
