// PollThenWait against a real completion queue, with gRPC alarms as events.
#include "service/queue_poll.h"

#include <time.h>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "grpcpp/alarm.h"

namespace raftkv::service {
namespace {

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
  // Sets an alarm that completes on the queue with &tag_ after `delay`, then
  // takes the next event with PollThenWait(`poll`): that alarm's, which it
  // checks. Returns how long that took.
  absl::Duration WaitForEventIn(absl::Duration delay, absl::Duration poll) {
    alarm_.Set(&cq_, absl::ToChronoTime(absl::Now() + delay), &tag_);
    const absl::Time start = absl::Now();
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(PollThenWait(&cq_, &tag, &ok, poll));
    EXPECT_EQ(tag, &tag_);
    EXPECT_TRUE(ok);
    return absl::Now() - start;
  }
  // PollThenWaitUntil(`poll`, `deadline`) on the queue; the event's tag and
  // ok land in tag_seen_ and ok_seen_.
  grpc::CompletionQueue::NextStatus PollUntil(absl::Duration poll, absl::Time deadline) {
    return PollThenWaitUntil(&cq_, &tag_seen_, &ok_seen_, poll, deadline);
  }
  grpc::CompletionQueue cq_;
  int tag_ = 0;
  void* tag_seen_ = nullptr;
  bool ok_seen_ = false;
  grpc::Alarm alarm_;
};

TEST_F(PollThenWaitTest, AnEventThatArrivesWhilePollingIsReturnedBeforeThePollEnds) {
  EXPECT_LT(WaitForEventIn(absl::Milliseconds(20), absl::Seconds(20)), absl::Seconds(10));
}

TEST_F(PollThenWaitTest, AfterThePollItWaitsForTheNextEvent) {
  EXPECT_GE(WaitForEventIn(absl::Milliseconds(100), absl::Milliseconds(1)),
            absl::Milliseconds(90));
}

TEST_F(PollThenWaitTest, AShutDownQueueEndsThePoll) {
  cq_.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  EXPECT_FALSE(PollThenWait(&cq_, &tag, &ok, absl::Seconds(20)));
}

// The point of polling: the thread stays on its core instead of sleeping.
// Yielding between polls lets other threads go first, so only a share of
// the interval is asserted; without polling the thread sleeps throughout.
TEST_F(PollThenWaitTest, ItPollsInsteadOfSleepingOnlyWhenAsked) {
  absl::Duration cpu = ThreadCpu();
  WaitForEventIn(absl::Milliseconds(300), absl::ZeroDuration());
  const absl::Duration sleeping = ThreadCpu() - cpu;
  cpu = ThreadCpu();
  WaitForEventIn(absl::Milliseconds(300), absl::Seconds(20));
  const absl::Duration polling = ThreadCpu() - cpu;
  EXPECT_LT(sleeping, absl::Milliseconds(15));
  EXPECT_GT(polling, absl::Milliseconds(15));
}

TEST_F(PollThenWaitTest, WithADeadlineAnEventWhilePollingIsReturned) {
  alarm_.Set(&cq_, absl::ToChronoTime(absl::Now() + absl::Milliseconds(20)), &tag_);
  const absl::Time start = absl::Now();
  EXPECT_EQ(PollUntil(absl::Seconds(20), start + absl::Seconds(20)),
            grpc::CompletionQueue::GOT_EVENT);
  EXPECT_EQ(tag_seen_, &tag_);
  EXPECT_TRUE(ok_seen_);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// The deadline bounds the poll as well as the wait after it: with nothing
// on the queue the call returns TIMEOUT at the deadline, not at the end of
// a longer poll.
TEST_F(PollThenWaitTest, WithADeadlineNothingQueuedTimesOutAtTheDeadline) {
  const absl::Time start = absl::Now();
  EXPECT_EQ(PollUntil(absl::Seconds(20), start + absl::Milliseconds(100)),
            grpc::CompletionQueue::TIMEOUT);
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(100));
  EXPECT_LT(took, absl::Seconds(10));
}

TEST_F(PollThenWaitTest, WithADeadlineItWaitsPastAShortPollForALaterEvent) {
  alarm_.Set(&cq_, absl::ToChronoTime(absl::Now() + absl::Milliseconds(100)), &tag_);
  const absl::Duration cpu = ThreadCpu();
  const absl::Time start = absl::Now();
  EXPECT_EQ(PollUntil(absl::Milliseconds(1), start + absl::Seconds(20)),
            grpc::CompletionQueue::GOT_EVENT);
  EXPECT_EQ(tag_seen_, &tag_);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
  // It slept after the 1 ms poll rather than polling on until the event.
  EXPECT_LT(ThreadCpu() - cpu, absl::Milliseconds(15));
}

TEST_F(PollThenWaitTest, WithADeadlineAShutDownQueueEndsThePoll) {
  cq_.Shutdown();
  EXPECT_EQ(PollUntil(absl::Seconds(20), absl::Now() + absl::Seconds(20)),
            grpc::CompletionQueue::SHUTDOWN);
}

}  // namespace
}  // namespace raftkv::service
