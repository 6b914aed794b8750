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

// Shared by both APIs: a stub, reused request/response messages and a fresh
// ClientContext per call (a context cannot be reused).
template <typename Service, typename PutReq, typename PutResp, typename GetReq, typename GetResp>
class CallerBase : public KvCaller {
 public:
  CallerBase(std::shared_ptr<grpc::Channel> channel, CallObserver* observer)
      : stub_(Service::NewStub(std::move(channel))), observer_(observer) {}

 protected:
  grpc::ClientContext* NewContext(absl::Time deadline) {
    context_.emplace();
    context_->set_deadline(absl::ToChronoTime(deadline));
    return &*context_;
  }
  void Done(const grpc::Status& status) { observer_->OnCallDone(status); }

  std::unique_ptr<typename Service::Stub> stub_;
  CallObserver* const observer_;
  std::optional<grpc::ClientContext> context_;
  PutReq put_request_;
  PutResp put_response_;
  GetReq get_request_;
  GetResp get_response_;
};

class RaftkvCaller
    : public CallerBase<raftkv::v1::KV, raftkv::v1::PutRequest, raftkv::v1::PutResponse,
                        raftkv::v1::GetRequest, raftkv::v1::GetResponse> {
 public:
  RaftkvCaller(std::shared_ptr<grpc::Channel> channel, const std::string& value, bool serializable,
               CallObserver* observer)
      : CallerBase(std::move(channel), observer) {
    put_request_.set_value(value);
    get_request_.set_serializable(serializable);
  }

  void Start(OpKind op, const std::string& key, absl::Time deadline) override {
    grpc::ClientContext* context = NewContext(deadline);
    if (op == OpKind::kPut) {
      put_request_.set_key(key);
      stub_->async()->Put(context, &put_request_, &put_response_,
                          [this](grpc::Status s) { Done(s); });
    } else {
      get_request_.set_key(key);
      stub_->async()->Get(context, &get_request_, &get_response_,
                          [this](grpc::Status s) { Done(s); });
    }
  }
};

class EtcdCaller
    : public CallerBase<etcdserverpb::KV, etcdserverpb::PutRequest, etcdserverpb::PutResponse,
                        etcdserverpb::RangeRequest, etcdserverpb::RangeResponse> {
 public:
  EtcdCaller(std::shared_ptr<grpc::Channel> channel, const std::string& value, bool serializable,
             CallObserver* observer)
      : CallerBase(std::move(channel), observer) {
    put_request_.set_value(value);
    get_request_.set_serializable(serializable);
  }

  void Start(OpKind op, const std::string& key, absl::Time deadline) override {
    grpc::ClientContext* context = NewContext(deadline);
    if (op == OpKind::kPut) {
      put_request_.set_key(key);
      stub_->async()->Put(context, &put_request_, &put_response_,
                          [this](grpc::Status s) { Done(s); });
    } else {
      get_request_.set_key(key);
      stub_->async()->Range(context, &get_request_, &get_response_,
                            [this](grpc::Status s) { Done(s); });
    }
  }
};

class RaftkvApi : public KvApi {
 public:
  std::unique_ptr<KvCaller> NewCaller(std::shared_ptr<grpc::Channel> channel,
                                      const std::string& value, bool serializable,
                                      CallObserver* observer) const override {
    return std::make_unique<RaftkvCaller>(std::move(channel), value, serializable, observer);
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
                                      const std::string& value, bool serializable,
                                      CallObserver* observer) const override {
    return std::make_unique<EtcdCaller>(std::move(channel), value, serializable, observer);
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
