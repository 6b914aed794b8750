#include "service/queue_poll.h"

#include <sched.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace raftkv::service {

namespace {

// Polls until an event comes, the queue shuts down or `until` has passed;
// TIMEOUT in the last case.
grpc::CompletionQueue::NextStatus Poll(grpc::CompletionQueue* cq, void** tag, bool* ok,
                                       absl::Time until) {
  const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  while (true) {
    grpc::CompletionQueue::NextStatus status = cq->AsyncNext(tag, ok, no_wait);
    if (status != grpc::CompletionQueue::TIMEOUT || absl::Now() >= until) return status;
    sched_yield();
  }
}

}  // namespace

bool PollThenWait(grpc::CompletionQueue* cq, void** tag, bool* ok, absl::Duration poll) {
  if (poll > absl::ZeroDuration()) {
    switch (Poll(cq, tag, ok, absl::Now() + poll)) {
      case grpc::CompletionQueue::GOT_EVENT:
        return true;
      case grpc::CompletionQueue::SHUTDOWN:
        return false;
      case grpc::CompletionQueue::TIMEOUT:
        break;
    }
  }
  return cq->Next(tag, ok);
}

grpc::CompletionQueue::NextStatus PollThenWaitUntil(grpc::CompletionQueue* cq, void** tag,
                                                    bool* ok, absl::Duration poll,
                                                    absl::Time deadline) {
  if (poll > absl::ZeroDuration()) {
    grpc::CompletionQueue::NextStatus status =
        Poll(cq, tag, ok, std::min(absl::Now() + poll, deadline));
    if (status != grpc::CompletionQueue::TIMEOUT) return status;
  }
  return cq->AsyncNext(tag, ok, absl::ToChronoTime(deadline));
}

}  // namespace raftkv::service
