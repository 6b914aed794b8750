#include "bench/kv_api.h"

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "proto/etcd_minimal.grpc.pb.h"
#include "raftkv/v1/cluster.grpc.pb.h"
#include "raftkv/v1/kv.grpc.pb.h"

namespace raftkv::bench {
namespace {

// The two services differ only in their message types and the read method's
// name (raftkv's Get, etcd's Range).
struct RaftkvService {
  using Service = raftkv::v1::KV;
  using PutRequest = raftkv::v1::PutRequest;
  using PutResponse = raftkv::v1::PutResponse;
  using ReadRequest = raftkv::v1::GetRequest;
  using ReadResponse = raftkv::v1::GetResponse;
  static auto PrepareRead(Service::Stub* stub, grpc::ClientContext* context,
                          const ReadRequest& request, grpc::CompletionQueue* cq) {
    return stub->PrepareAsyncGet(context, request, cq);
  }
};

struct EtcdService {
  using Service = etcdserverpb::KV;
  using PutRequest = etcdserverpb::PutRequest;
  using PutResponse = etcdserverpb::PutResponse;
  using ReadRequest = etcdserverpb::RangeRequest;
  using ReadResponse = etcdserverpb::RangeResponse;
  static auto PrepareRead(Service::Stub* stub, grpc::ClientContext* context,
                          const ReadRequest& request, grpc::CompletionQueue* cq) {
    return stub->PrepareAsyncRange(context, request, cq);
  }
};

// One client's call slot over either service; one call at a time, under the
// KvCaller contract. Per call it allocates only what gRPC itself needs (the
// call and its arena, which also holds the response reader); the messages
// are reused.
template <typename S>
class Caller : public KvCaller {
 public:
  Caller(std::shared_ptr<grpc::Channel> channel, const std::string& value, bool serializable)
      : stub_(S::Service::NewStub(std::move(channel))) {
    put_request_.set_value(value);
    read_request_.set_serializable(serializable);
  }

  void Start(OpKind op, const std::string& key, absl::Time deadline, grpc::CompletionQueue* cq,
             void* tag) override {
    // The readers live in the previous call's arena, which the context owns:
    // drop them before the context.
    put_reader_.reset();
    read_reader_.reset();
    context_.emplace();
    context_->set_deadline(absl::ToChronoTime(deadline));
    if (op == OpKind::kPut) {
      put_request_.set_key(key);
      put_reader_ = stub_->PrepareAsyncPut(&*context_, put_request_, cq);
      put_reader_->StartCall();
      put_reader_->Finish(&put_response_, &status_, tag);
    } else {
      read_request_.set_key(key);
      read_reader_ = S::PrepareRead(stub_.get(), &*context_, read_request_, cq);
      read_reader_->StartCall();
      read_reader_->Finish(&read_response_, &status_, tag);
    }
  }

  const grpc::Status& status() const override { return status_; }

 private:
  const std::unique_ptr<typename S::Service::Stub> stub_;
  typename S::PutRequest put_request_;
  typename S::PutResponse put_response_;
  typename S::ReadRequest read_request_;
  typename S::ReadResponse read_response_;
  grpc::Status status_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<typename S::PutResponse>> put_reader_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<typename S::ReadResponse>> read_reader_;
  // Declared after the readers so that it is destroyed after them.
  std::optional<grpc::ClientContext> context_;
};

class RaftkvApi : public KvApi {
 public:
  std::unique_ptr<KvCaller> NewCaller(std::shared_ptr<grpc::Channel> channel,
                                      const std::string& value,
                                      bool serializable) const override {
    return std::make_unique<Caller<RaftkvService>>(std::move(channel), value, serializable);
  }

  // Asks each endpoint's Cluster/Status for its role; the one that says
  // "leader" wins. Retries until `wait` passes, since a new cluster may still
  // be electing.
  absl::StatusOr<std::string> FindLeader(const std::vector<std::string>& endpoints,
                                         absl::Duration wait) const override {
    const absl::Time give_up = absl::Now() + wait;
    std::vector<std::string> last_errors;
    while (true) {
      last_errors.clear();
      for (size_t i = 0; i < endpoints.size(); ++i) {
        auto stub = raftkv::v1::Cluster::NewStub(NewBenchChannel(endpoints[i], -1 - int(i)));
        grpc::ClientContext context;
        context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
        raftkv::v1::StatusResponse response;
        const grpc::Status s = stub->Status(&context, raftkv::v1::StatusRequest(), &response);
        if (s.ok() && response.role() == "leader") return endpoints[i];
        last_errors.push_back(s.ok() ? absl::StrCat(endpoints[i], " is ", response.role())
                                     : absl::StrCat(endpoints[i], ": ", s.error_message()));
      }
      if (absl::Now() >= give_up) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::UnavailableError(absl::StrCat("no leader among the endpoints after ",
                                               absl::FormatDuration(wait), " (",
                                               absl::StrJoin(last_errors, "; "), ")"));
  }
};

class EtcdApi : public KvApi {
 public:
  std::unique_ptr<KvCaller> NewCaller(std::shared_ptr<grpc::Channel> channel,
                                      const std::string& value,
                                      bool serializable) const override {
    return std::make_unique<Caller<EtcdService>>(std::move(channel), value, serializable);
  }

  // The minimal etcd API has no Maintenance.Status: the caller names the
  // leader by listing it first.
  absl::StatusOr<std::string> FindLeader(const std::vector<std::string>& endpoints,
                                         absl::Duration) const override {
    if (endpoints.empty()) return absl::InvalidArgumentError("no endpoints");
    return endpoints.front();
  }
};

}  // namespace

std::unique_ptr<KvApi> NewRaftkvApi() { return std::make_unique<RaftkvApi>(); }
std::unique_ptr<KvApi> NewEtcdApi() { return std::make_unique<EtcdApi>(); }
std::unique_ptr<KvApi> NewApi(Api api) { return api == Api::kEtcd ? NewEtcdApi() : NewRaftkvApi(); }

std::shared_ptr<grpc::Channel> NewBenchChannel(const std::string& endpoint, int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("raftkv.bench.channel", index);
  // The bench measures the service, not gRPC's retry logic.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

}  // namespace raftkv::bench
