// Internal: the key layout of the state-machine database (see the comment at
// the top of state_machine.h), shared by the state machine and its snapshot
// reader/importer. Not part of the public API.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "leveldb/options.h"
#include "storage/state_machine.h"

namespace raftkv::storage::internal {

inline constexpr char kDataPrefix = 'k';
inline constexpr char kSessionPrefix = 's';
inline constexpr char kExpiryPrefix = 'x';
inline constexpr char kFormatKey[] = "m:format";
inline constexpr char kFormat[] = "raftkv-sm-1";
inline constexpr char kStateKey[] = "m:state";

std::string DataKey(std::string_view key);
std::string SessionKey(uint64_t client_id);
std::string ExpiryKey(uint64_t last_index, uint64_t client_id);
std::string EncodeState(uint64_t applied, uint64_t term, int64_t revision);
bool DecodeState(std::string_view v, uint64_t* applied, uint64_t* term, int64_t* revision);
// `block_cache` (may be null) and `env` are the state machine's own.
leveldb::Options StateMachineDbOptions(const StateMachineOptions& options,
                                       leveldb::Cache* block_cache, leveldb::Env* env);
std::string DbDirName(uint64_t generation);

}  // namespace raftkv::storage::internal
