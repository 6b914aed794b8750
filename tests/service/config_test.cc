// Parsing and checking raftd's start-up configuration (service/config.h).
#include "service/config.h"

#include <initializer_list>

#include "gtest/gtest.h"

namespace raftkv::service {
namespace {

TEST(InitialClusterTest, ParsesIdPeerAndClientAddresses) {
  auto m = ParseInitialCluster("1=127.0.0.1:7101/127.0.0.1:7001, 2=h2:7102/h2:7002");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ(m->at(1).peer_addr, "127.0.0.1:7101");
  EXPECT_EQ(m->at(1).client_addr, "127.0.0.1:7001");
  EXPECT_EQ(m->at(2).peer_addr, "h2:7102");
  EXPECT_EQ(m->at(2).client_addr, "h2:7002");
}

TEST(InitialClusterTest, RejectsMalformedMembersWithTheirText) {
  for (const char* bad :
       {"", "1=a:1", "x=a:1/b:2", "0=a:1/b:2", "1=a:1/b", "1=/b:2", "1=a:1/b:2,1=c:3/d:4", "1"}) {
    auto m = ParseInitialCluster(bad);
    EXPECT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(m.status().message().find("initial_cluster"), absl::string_view::npos) << bad;
  }
}

NodeConfig Valid() {
  NodeConfig c;
  c.id = 1;
  c.cluster_id = 1;
  c.data_dir = "/tmp/x";
  c.members = *ParseInitialCluster("1=a:1/a:2,2=b:1/b:2,3=c:1/c:2");
  return c;
}

TEST(ValidateConfigTest, AcceptsAConsistentConfig) {
  EXPECT_TRUE(ValidateConfig(Valid()).ok());
  EXPECT_EQ(Valid().voter_ids(), (std::vector<uint64_t>{1, 2, 3}));
}

TEST(ValidateConfigTest, RejectsAnIdOutsideTheCluster) {
  NodeConfig c = Valid();
  c.id = 4;
  absl::Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not a member"), absl::string_view::npos);
}

TEST(ValidateConfigTest, RejectsMissingDataDirAndBadTimeouts) {
  NodeConfig c = Valid();
  c.data_dir.clear();
  EXPECT_FALSE(ValidateConfig(c).ok());
  c = Valid();
  c.heartbeat_ms = 0;
  EXPECT_FALSE(ValidateConfig(c).ok());
  c = Valid();
  c.election_ms = c.heartbeat_ms;  // an election timeout must span several heartbeats
  EXPECT_FALSE(ValidateConfig(c).ok());
  c = Valid();
  c.cluster_id = 0;
  EXPECT_FALSE(ValidateConfig(c).ok());
}

// `field` accepts every value of `good` and refuses every value of `bad`
// with an error that names `flag`.
void ExpectBounds(int NodeConfig::*field, std::initializer_list<int> good,
                  std::initializer_list<int> bad, absl::string_view flag) {
  for (int v : good) {
    NodeConfig c = Valid();
    c.*field = v;
    EXPECT_TRUE(ValidateConfig(c).ok()) << flag << "=" << v;
  }
  for (int v : bad) {
    NodeConfig c = Valid();
    c.*field = v;
    absl::Status s = ValidateConfig(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << flag << "=" << v;
    EXPECT_NE(s.message().find(flag), absl::string_view::npos) << flag << "=" << v;
  }
}

TEST(ValidateConfigTest, KvThreadsDefaultToOneAndMustBeZeroToSixtyFour) {
  EXPECT_EQ(Valid().kv_threads, 1);
  ExpectBounds(&NodeConfig::kv_threads, {0, 1, 64}, {-1, 65}, "--kv_threads");
}

TEST(ValidateConfigTest, KvPollDefaultsToAHundredMicrosecondsAndIsBounded) {
  EXPECT_EQ(Valid().kv_poll_us, 100);
  ExpectBounds(&NodeConfig::kv_poll_us, {0, 100, 10000}, {-1, 10001}, "--kv_poll_us");
}

TEST(ValidateConfigTest, RaftPollDefaultsToTwoHundredMicrosecondsAndIsBounded) {
  EXPECT_EQ(Valid().raft_poll_us, 200);
  ExpectBounds(&NodeConfig::raft_poll_us, {0, 100, 10000}, {-1, 10001}, "--raft_poll_us");
}

}  // namespace
}  // namespace raftkv::service
