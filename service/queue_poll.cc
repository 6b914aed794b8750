#include "service/queue_poll.h"

#include <sched.h>

#include <algorithm>

namespace raftkv::service {

grpc::CompletionQueue::NextStatus PollThenWait(grpc::CompletionQueue* cq, void** tag, bool* ok,
                                               absl::Duration poll, absl::Time deadline) {
  if (poll > absl::ZeroDuration()) {
    const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    const absl::Time until = std::min(absl::Now() + poll, deadline);
    do {
      grpc::CompletionQueue::NextStatus s = cq->AsyncNext(tag, ok, no_wait);
      if (s != grpc::CompletionQueue::TIMEOUT) return s;
      sched_yield();
    } while (absl::Now() < until);
  }
  if (deadline == absl::InfiniteFuture()) {
    return cq->AsyncNext(tag, ok, gpr_inf_future(GPR_CLOCK_MONOTONIC));
  }
  return cq->AsyncNext(tag, ok, absl::ToChronoTime(deadline));
}

}  // namespace raftkv::service
