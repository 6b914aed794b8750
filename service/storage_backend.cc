// OpenBackends: TEMPORARY in-memory stand-in until storage/ (LevelDB) lands
// on main; replaced by adapters over storage::LogStore and
// storage::StateMachine.
#include "spdlog/spdlog.h"
#include "service/backend.h"

namespace raftkv::service {

absl::StatusOr<Backends> OpenBackends(const std::string& data_dir, uint64_t cluster_id,
                                      uint64_t node_id,
                                      const std::vector<uint64_t>& initial_voters) {
  spdlog::warn("storage/ is not available yet: data in {} is NOT persisted", data_dir);
  return MemoryBackends(initial_voters);
}

}  // namespace raftkv::service
