// OpenBackends when storage/ is not in the tree yet (TEMPORARY, while the
// storage branch lands): in-memory stores, nothing persisted.
#include "service/backend.h"
#include "spdlog/spdlog.h"

namespace raftkv::service {

absl::StatusOr<Backends> OpenBackends(const std::string& data_dir, uint64_t, uint64_t,
                                      const std::vector<uint64_t>& initial_voters) {
  spdlog::warn("built without storage/: data in {} is NOT persisted", data_dir);
  return MemoryBackends(initial_voters);
}

}  // namespace raftkv::service
