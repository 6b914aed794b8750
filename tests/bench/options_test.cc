// Command-line parsing of the bench: defaults, both flag forms, bounds, and a
// clear error naming the flag for every bad input.
#include "bench/options.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace raftkv::bench {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<Options> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "bench");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return ParseOptions(static_cast<int>(argv.size()), argv.data());
}

void ExpectInvalid(std::vector<std::string> args, const std::string& message) {
  const auto o = Parse(args);
  ASSERT_FALSE(o.ok()) << "accepted: " << ::testing::PrintToString(args);
  EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(o.status().message()), HasSubstr(message));
}

TEST(OptionsTest, DefaultsAreBoundedInCountAndTime) {
  const auto o = Parse({"put"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->workload, Workload::kPut);
  EXPECT_EQ(o->api, Api::kRaftkv);
  EXPECT_EQ(o->endpoints, std::vector<std::string>{"127.0.0.1:7001"});
  EXPECT_EQ(o->target, Target::kLeader);
  EXPECT_EQ(o->conns, 1);
  EXPECT_EQ(o->clients, 1);
  EXPECT_EQ(o->total, 10000u);
  EXPECT_EQ(o->duration, absl::Minutes(10));
  EXPECT_EQ(o->key_size, 8);
  EXPECT_EQ(o->key_space, KeySpace::kRandom);
  EXPECT_EQ(o->val_size, 256);
  EXPECT_FALSE(o->serializable);
  EXPECT_FALSE(o->json);
  EXPECT_TRUE(o->coalesce_sends);
}

TEST(OptionsTest, ADurationAloneStillCapsTheCount) {
  const auto o = Parse({"get", "--duration=3s"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->duration, absl::Seconds(3));
  EXPECT_EQ(o->total, Options::kMaxTotal);
}

TEST(OptionsTest, BothFlagFormsAndEveryOption) {
  const auto o = Parse({"mixed",
                        "--endpoints",
                        "127.0.0.1:1,http://127.0.0.2:2,localhost:3",
                        "--api=etcd",
                        "--target=all",
                        "--conns=16",
                        "--clients",
                        "1000",
                        "--threads=3",
                        "--total=5000",
                        "--duration=1.5",
                        "--warmup=500ms",
                        "--rate=2000",
                        "--key-size=12",
                        "--key-space=sequential",
                        "--keys=42",
                        "--val-size=0",
                        "--consistency=s",
                        "--read-fraction=0.9",
                        "--prefill",
                        "--timeout=2s",
                        "--coalesce-sends=false",
                        "-w",
                        "json"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->workload, Workload::kMixed);
  EXPECT_EQ(o->endpoints, (std::vector<std::string>{"127.0.0.1:1", "127.0.0.2:2", "localhost:3"}));
  EXPECT_EQ(o->api, Api::kEtcd);
  EXPECT_EQ(o->target, Target::kAll);
  EXPECT_EQ(o->conns, 16);
  EXPECT_EQ(o->clients, 1000);
  EXPECT_EQ(o->threads, 3);
  EXPECT_EQ(o->total, 5000u);
  EXPECT_EQ(o->duration, absl::Milliseconds(1500));
  EXPECT_EQ(o->warmup, absl::Milliseconds(500));
  EXPECT_EQ(o->rate, 2000);
  EXPECT_EQ(o->key_size, 12);
  EXPECT_EQ(o->key_space, KeySpace::kSequential);
  EXPECT_EQ(o->keys, 42u);
  EXPECT_EQ(o->val_size, 0);
  EXPECT_TRUE(o->serializable);
  EXPECT_DOUBLE_EQ(o->read_fraction, 0.9);
  EXPECT_TRUE(o->prefill);
  EXPECT_EQ(o->timeout, absl::Seconds(2));
  EXPECT_FALSE(o->coalesce_sends);
  EXPECT_TRUE(o->json);
}

TEST(OptionsTest, ThreadsDefaultToOnePerCoreButNeverExceedTheClients) {
  const auto many = Parse({"put", "--clients=1000"});
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ(many->threads, std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1,
                                      Options::kMaxThreads));
  const auto one = Parse({"put", "--clients=1", "--threads=8"});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->threads, 1);
}

TEST(OptionsTest, EtcdDefaultsToItsClientPort) {
  const auto o = Parse({"put", "--api=etcd"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->endpoints, std::vector<std::string>{"127.0.0.1:2379"});
}

TEST(OptionsTest, HelpNeedsNoWorkload) {
  const auto o = Parse({"--help"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->help);
  EXPECT_THAT(Usage(), HasSubstr("--key-space"));
}

TEST(OptionsTest, BadInputNamesTheProblem) {
  ExpectInvalid({}, "exactly one workload");
  ExpectInvalid({"delete"}, "unknown workload 'delete'");
  ExpectInvalid({"put", "get"}, "exactly one workload");
  ExpectInvalid({"put", "--clients=0"}, "--clients");
  ExpectInvalid({"put", "--clients=abc"}, "not an integer");
  ExpectInvalid({"put", "--clients"}, "needs a value");
  ExpectInvalid({"put", "--conns=8", "--clients=4"}, "--conns");
  ExpectInvalid({"put", "--threads=0"}, "--threads");
  ExpectInvalid({"put", "--threads=100000"}, "out of range");
  ExpectInvalid({"put", "--duration=forever"}, "--duration");
  ExpectInvalid({"put", "--duration=2h"}, "out of range");
  ExpectInvalid({"put", "--rate=-1"}, "--rate");
  ExpectInvalid({"put", "--key-space=zipf"}, "unknown key space");
  ExpectInvalid({"put", "--key-size=2", "--keys=1000"}, "do not fit");
  ExpectInvalid({"put", "--val-size=99999999"}, "--val-size");
  ExpectInvalid({"get", "--consistency=x"}, "--consistency");
  ExpectInvalid({"put", "--api=zookeeper"}, "unknown api");
  ExpectInvalid({"put", "--target=one"}, "unknown target");
  ExpectInvalid({"put", "-w", "yaml"}, "unknown format");
  ExpectInvalid({"put", "--frobnicate=1"}, "unknown flag --frobnicate");
  ExpectInvalid({"put", "--endpoints=127.0.0.1"}, "not host:port");
  ExpectInvalid({"put", "--endpoints=127.0.0.1:99999"}, "not host:port");
  ExpectInvalid({"put", "--timeout=0"}, "--timeout");
  ExpectInvalid({"put", "--coalesce-sends=yes"}, "want true or false");
}

TEST(OptionsTest, RemoteEndpointsNeedAnExplicitFlag) {
  ExpectInvalid({"put", "--endpoints=10.0.0.5:7001"}, "not a loopback address");
  ExpectInvalid({"put", "--endpoints=example.com:7001"}, "not a loopback address");
  const auto o = Parse({"put", "--endpoints=10.0.0.5:7001", "--allow-remote"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->allow_remote);
}

TEST(OptionsTest, LoopbackRecognition) {
  EXPECT_TRUE(*IsLoopbackEndpoint("127.0.0.1:1"));
  EXPECT_TRUE(*IsLoopbackEndpoint("127.255.3.4:65535"));
  EXPECT_TRUE(*IsLoopbackEndpoint("localhost:80"));
  EXPECT_TRUE(*IsLoopbackEndpoint("[::1]:80"));
  EXPECT_TRUE(*IsLoopbackEndpoint("http://127.0.0.1:2379"));
  EXPECT_FALSE(*IsLoopbackEndpoint("128.0.0.1:1"));
  EXPECT_FALSE(*IsLoopbackEndpoint("127.0.0.1.example.com:1"));
  EXPECT_FALSE(*IsLoopbackEndpoint("[::2]:80"));
  EXPECT_FALSE(IsLoopbackEndpoint("::1").ok());
  EXPECT_FALSE(IsLoopbackEndpoint(":80").ok());
}

TEST(OptionsTest, SplitEndpointGivesHostAndPort) {
  const auto plain = SplitEndpoint("127.0.0.1:7001");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->host, "127.0.0.1");
  EXPECT_EQ(plain->port, 7001);
  const auto v6 = SplitEndpoint("http://[::1]:2379");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 2379);
  EXPECT_FALSE(SplitEndpoint("127.0.0.1:0").ok());
  EXPECT_FALSE(SplitEndpoint("127.0.0.1:65536").ok());
  EXPECT_FALSE(SplitEndpoint("127.0.0.1").ok());
}

}  // namespace
}  // namespace raftkv::bench
