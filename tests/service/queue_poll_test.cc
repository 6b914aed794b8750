// PollThenWait against a real completion queue, with gRPC alarms as events.
#include "service/queue_poll.h"

#include <time.h>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "grpcpp/alarm.h"

namespace raftkv::service {
namespace {

using NextStatus = grpc::CompletionQueue::NextStatus;

absl::Duration ThreadCpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

class PollThenWaitTest : public ::testing::Test {
 protected:
  ~PollThenWaitTest() override {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  // Sets alarm_ to complete on the queue with &tag_ after `delay`.
  void EventIn(absl::Duration delay) {
    alarm_.Set(&cq_, absl::ToChronoTime(absl::Now() + delay), &tag_);
  }
  grpc::CompletionQueue cq_;
  int tag_ = 0;
  grpc::Alarm alarm_;
};

TEST_F(PollThenWaitTest, AnEventThatArrivesWhilePollingIsReturnedBeforeThePollEnds) {
  EventIn(absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  void* tag = nullptr;
  bool ok = false;
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::Seconds(20), absl::InfiniteFuture()),
            NextStatus::GOT_EVENT);
  EXPECT_EQ(tag, &tag_);
  EXPECT_TRUE(ok);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(PollThenWaitTest, AfterThePollItWaitsForTheNextEvent) {
  EventIn(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  void* tag = nullptr;
  bool ok = false;
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::Milliseconds(1), absl::InfiniteFuture()),
            NextStatus::GOT_EVENT);
  EXPECT_EQ(tag, &tag_);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
}

TEST_F(PollThenWaitTest, NothingArrivingTimesOutAtTheDeadlineEvenWhenThePollIsLonger) {
  const absl::Time start = absl::Now();
  void* tag = nullptr;
  bool ok = false;
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::Seconds(20), start + absl::Milliseconds(50)),
            NextStatus::TIMEOUT);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(50));
  EXPECT_LT(waited, absl::Seconds(10));
}

TEST_F(PollThenWaitTest, AShutDownQueueEndsThePoll) {
  cq_.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::Seconds(20), absl::InfiniteFuture()),
            NextStatus::SHUTDOWN);
}

// The point of polling: the thread stays on its core instead of sleeping.
// Yielding between polls lets other threads go first, so only a share of
// the interval is asserted; without polling the thread sleeps throughout.
TEST_F(PollThenWaitTest, ItPollsInsteadOfSleepingOnlyWhenAsked) {
  void* tag = nullptr;
  bool ok = false;
  absl::Duration cpu = ThreadCpu();
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::ZeroDuration(),
                         absl::Now() + absl::Milliseconds(300)),
            NextStatus::TIMEOUT);
  const absl::Duration sleeping = ThreadCpu() - cpu;
  cpu = ThreadCpu();
  EXPECT_EQ(PollThenWait(&cq_, &tag, &ok, absl::Milliseconds(300),
                         absl::Now() + absl::Milliseconds(300)),
            NextStatus::TIMEOUT);
  const absl::Duration polling = ThreadCpu() - cpu;
  EXPECT_LT(sleeping, absl::Milliseconds(15));
  EXPECT_GT(polling, absl::Milliseconds(15));
}

}  // namespace
}  // namespace raftkv::service
