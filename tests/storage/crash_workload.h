// The deterministic workload shared by the crash test and the child process
// it kills: the content of log entry i depends only on i (and its term), so
// the test can compute what the state machine must hold at any applied index
// without trusting anything the child wrote.
//
// Entry i: a no-op when i % 7 == 0; else a retry of entry i - 3's command
// (same client and sequence, so it must change nothing) when i % 11 == 0 and
// entry i - 3 is an ordinary command; else a delete of key k<i % 50> when
// i % 13 == 0; else a put of k<i % 50> = v<i>. Client of entry i: 1 + i % 4,
// sequence i.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "raft/log_storage.h"
#include "raftkv/v1/state_machine.pb.h"

namespace raftkv::storage::testing {

raft::Entry WorkloadEntry(uint64_t index, uint64_t term);

struct ExpectedState {
  std::map<std::string, v1::KeyValue> kvs;
  int64_t revision = 0;
};

// What a correct state machine holds after applying entries 1..applied.
ExpectedState ExpectedStateAt(uint64_t applied);

}  // namespace raftkv::storage::testing
