#include "service/queue_poll.h"

#include <sched.h>

namespace raftkv::service {

bool PollThenWait(grpc::CompletionQueue* cq, void** tag, bool* ok, absl::Duration poll) {
  if (poll > absl::ZeroDuration()) {
    const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    const absl::Time until = absl::Now() + poll;
    do {
      switch (cq->AsyncNext(tag, ok, no_wait)) {
        case grpc::CompletionQueue::GOT_EVENT:
          return true;
        case grpc::CompletionQueue::SHUTDOWN:
          return false;
        case grpc::CompletionQueue::TIMEOUT:
          break;
      }
      sched_yield();
    } while (absl::Now() < until);
  }
  return cq->Next(tag, ok);
}

}  // namespace raftkv::service
