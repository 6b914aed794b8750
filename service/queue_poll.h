// PollThenWait, PollThenWaitUntil: take the next event off a completion
// queue, polling for a while before sleeping on it.
//
// On a VM whose idle vCPUs halt at once, waking a sleeping thread costs an
// interrupt sent through the host, on both ends (docs/benchmarks.md: the
// seventh VM kind). A KV thread that has just answered a call is likely to
// get the client's next request within tens of microseconds, and a leader's
// Raft thread that has just committed writes (or waits for a follower's
// acknowledgement) its next event; polling for them instead of sleeping
// saves that wake-up. Between polls the thread yields, so any other runnable
// thread on its core goes first: the polling only uses time that core would
// otherwise spend idle.
//
// Thread safety: call from the thread that drains `cq` (as with Next()).
#pragma once

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace raftkv::service {

// Polls `cq` (no wait, then sched_yield()) until an event comes, the queue
// shuts down or `poll` has passed; then waits on it as Next() does. Returns
// what Next() returns: false once the queue is shut down and drained.
// `poll` <= 0 waits at once.
bool PollThenWait(grpc::CompletionQueue* cq, void** tag, bool* ok, absl::Duration poll);

// The same with a deadline: polls as above (never past `deadline`), then
// waits as AsyncNext() does until `deadline`, and returns what it returns.
grpc::CompletionQueue::NextStatus PollThenWaitUntil(grpc::CompletionQueue* cq, void** tag,
                                                    bool* ok, absl::Duration poll,
                                                    absl::Time deadline);

}  // namespace raftkv::service
