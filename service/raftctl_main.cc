// raftctl: the command-line client of raftkv.
//
//   raftctl [--endpoints=HOST:PORT,...] [-w table|json] [--timeout_ms=N]
//           [--serializable] COMMAND ARGS...
//
// Exit status 0 on success; non-zero with the error on stderr otherwise.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "raftkv/v1/cluster.grpc.pb.h"
#include "raftkv/v1/kv.grpc.pb.h"

namespace raftkv::ctl {
namespace {

constexpr char kUsage[] =
    R"(raftctl: command-line client of raftkv.

Usage: raftctl [FLAGS] COMMAND [ARGS]

Commands:
  put KEY VALUE           write KEY
  get KEY                 read KEY (exit 1 if absent)
  del KEY                 delete KEY
  range PREFIX            list keys starting with PREFIX ("" = all keys)
  cas KEY OLD NEW         set KEY to NEW if its value is OLD
  cas --absent KEY NEW    set KEY to NEW if KEY does not exist
  status                  one line per endpoint: id, role, term, leader, indexes
  members                 cluster members
  bench WORKLOAD [FLAGS]  load generator: put|get|mixed (raftctl bench --help)

Flags:
  --endpoints=H:P[,H:P]   nodes to talk to (env RAFTKV_ENDPOINTS; default
                          127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003)
  -w table|json           output format (default table/plain)
  --timeout_ms=N          per-call deadline (default 5000)
  --serializable          reads may be served locally by the contacted node
  --limit=N               range: at most N keys (default 0 = server cap)
  --prev_kv               put, del: also print the value the key had before
  --client_id=N --sequence=N   exactly-once write session
)";

struct Options {
  std::vector<std::string> endpoints;
  bool json = false;
  int timeout_ms = 5000;
  bool serializable = false;
  bool absent = false;
  bool prev_kv = false;
  int64_t limit = 0;
  uint64_t client_id = 0;
  uint64_t sequence = 0;
};

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string StatusName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    default:
      return absl::StrCat("code ", static_cast<int>(c));
  }
}

int Error(const std::string& msg) {
  std::fprintf(stderr, "raftctl: %s\n", msg.c_str());
  return 1;
}

int RpcError(const std::string& endpoint, const grpc::Status& s) {
  return Error(absl::StrCat(endpoint, ": ", StatusName(s.error_code()), ": ", s.error_message()));
}

std::shared_ptr<grpc::Channel> Channel(const std::string& endpoint) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext* ctx, const Options& o) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(o.timeout_ms));
}

// Tries the endpoints in order until one answers with something other than
// UNAVAILABLE (a follower forwards to the leader, so any live node will do).
template <typename Fn>
grpc::Status WithFailover(const Options& o, std::string* used, Fn fn) {
  grpc::Status last;
  for (const std::string& ep : o.endpoints) {
    auto stub = v1::KV::NewStub(Channel(ep));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, o);
    last = fn(stub.get(), &ctx);
    *used = ep;
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE) return last;
  }
  return last;
}

int Put(const Options& o, const std::vector<std::string>& args) {
  if (args.size() != 2) return Error("usage: put KEY VALUE");
  v1::PutRequest req;
  req.set_key(args[0]);
  req.set_value(args[1]);
  req.set_client_id(o.client_id);
  req.set_sequence(o.sequence);
  req.set_prev_kv(o.prev_kv);
  v1::PutResponse resp;
  std::string ep;
  grpc::Status s = WithFailover(o, &ep, [&](v1::KV::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Put(ctx, req, &resp);
  });
  if (!s.ok()) return RpcError(ep, s);
  std::cout << (o.json ? Json(resp) : "OK") << "\n";
  if (!o.json && resp.has_prev_kv()) std::cout << resp.prev_kv().value() << "\n";
  return 0;
}

int Get(const Options& o, const std::vector<std::string>& args) {
  if (args.size() != 1) return Error("usage: get KEY");
  v1::GetRequest req;
  req.set_key(args[0]);
  req.set_serializable(o.serializable);
  v1::GetResponse resp;
  std::string ep;
  grpc::Status s = WithFailover(o, &ep, [&](v1::KV::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Get(ctx, req, &resp);
  });
  if (!s.ok()) return RpcError(ep, s);
  if (o.json) {
    std::cout << Json(resp) << "\n";
    return resp.found() ? 0 : 1;
  }
  if (!resp.found()) return Error(absl::StrCat("key \"", args[0], "\" not found"));
  std::cout << resp.kv().value() << "\n";
  return 0;
}

int Del(const Options& o, const std::vector<std::string>& args) {
  if (args.size() != 1) return Error("usage: del KEY");
  v1::DeleteRequest req;
  req.set_key(args[0]);
  req.set_client_id(o.client_id);
  req.set_sequence(o.sequence);
  req.set_prev_kv(o.prev_kv);
  v1::DeleteResponse resp;
  std::string ep;
  grpc::Status s = WithFailover(o, &ep, [&](v1::KV::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Delete(ctx, req, &resp);
  });
  if (!s.ok()) return RpcError(ep, s);
  std::cout << (o.json ? Json(resp) : (resp.deleted() ? "1" : "0")) << "\n";
  if (!o.json && resp.has_prev_kv()) std::cout << resp.prev_kv().value() << "\n";
  return 0;
}

int Range(const Options& o, const std::vector<std::string>& args) {
  if (args.size() != 1) return Error("usage: range PREFIX");
  v1::RangeRequest req;
  req.set_key(args[0]);
  req.set_prefix(true);
  req.set_limit(o.limit);
  req.set_serializable(o.serializable);
  v1::RangeResponse resp;
  std::string ep;
  grpc::Status s = WithFailover(o, &ep, [&](v1::KV::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Range(ctx, req, &resp);
  });
  if (!s.ok()) return RpcError(ep, s);
  if (o.json) {
    std::cout << Json(resp) << "\n";
    return 0;
  }
  for (const v1::KeyValue& kv : resp.kvs()) std::cout << kv.key() << "\t" << kv.value() << "\n";
  if (resp.more()) std::cerr << "raftctl: more keys match; raise --limit\n";
  return 0;
}

int Cas(const Options& o, const std::vector<std::string>& args) {
  v1::CompareAndSwapRequest req;
  if (o.absent) {
    if (args.size() != 2) return Error("usage: cas --absent KEY NEW");
    req.set_key(args[0]);
    req.set_expect_absent(true);
    req.set_new_value(args[1]);
  } else {
    if (args.size() != 3) return Error("usage: cas KEY OLD NEW");
    req.set_key(args[0]);
    req.set_expected_value(args[1]);
    req.set_new_value(args[2]);
  }
  req.set_client_id(o.client_id);
  req.set_sequence(o.sequence);
  v1::CompareAndSwapResponse resp;
  std::string ep;
  grpc::Status s = WithFailover(o, &ep, [&](v1::KV::Stub* stub, grpc::ClientContext* ctx) {
    return stub->CompareAndSwap(ctx, req, &resp);
  });
  if (!s.ok()) return RpcError(ep, s);
  std::cout << (o.json ? Json(resp) : "OK") << "\n";
  return 0;
}

int Status(const Options& o) {
  int failures = 0;
  std::vector<std::vector<std::string>> rows = {
      {"ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "ERROR"}};
  std::vector<std::string> json;
  for (const std::string& ep : o.endpoints) {
    auto stub = v1::Cluster::NewStub(Channel(ep));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, o);
    v1::StatusResponse resp;
    grpc::Status s = stub->Status(&ctx, v1::StatusRequest(), &resp);
    if (!s.ok()) {
      ++failures;
      std::string err = absl::StrCat(StatusName(s.error_code()), ": ", s.error_message());
      rows.push_back({ep, "-", "-", "-", "-", "-", "-", "-", err});
      json.push_back(absl::StrCat("{\"endpoint\":\"", ep, "\",\"error\":\"",
                                  StatusName(s.error_code()), "\"}"));
      std::fprintf(stderr, "raftctl: %s: %s\n", ep.c_str(), err.c_str());
      continue;
    }
    rows.push_back({ep, absl::StrCat(resp.node_id()), resp.role(), absl::StrCat(resp.term()),
                    absl::StrCat(resp.leader_id()), absl::StrCat(resp.commit_index()),
                    absl::StrCat(resp.applied_index()), absl::StrCat(resp.last_index()), ""});
    json.push_back(absl::StrCat("{\"endpoint\":\"", ep, "\",\"status\":", Json(resp), "}"));
  }
  if (o.json) {
    std::cout << "[" << absl::StrJoin(json, ",") << "]\n";
  } else {
    // The ERROR column only when some endpoint failed.
    if (failures == 0) {
      for (auto& r : rows) r.pop_back();
    }
    std::vector<size_t> width(rows[0].size(), 0);
    for (const auto& r : rows) {
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    for (const auto& r : rows) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) {
        absl::StrAppend(&line, r[i], std::string(width[i] - r[i].size() + 2, ' '));
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      std::cout << line << "\n";
    }
  }
  return failures == 0 ? 0 : 1;
}

int Members(const Options& o) {
  grpc::Status last;
  std::string ep;
  for (const std::string& e : o.endpoints) {
    ep = e;
    auto stub = v1::Cluster::NewStub(Channel(e));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, o);
    v1::MemberListResponse resp;
    last = stub->MemberList(&ctx, v1::MemberListRequest(), &resp);
    if (!last.ok()) continue;
    if (o.json) {
      std::cout << Json(resp) << "\n";
      return 0;
    }
    std::cout << "ID  PEER_ADDR  CLIENT_ADDR  LEADER\n";
    for (const v1::Member& m : resp.members()) {
      std::cout << m.id() << "  " << m.peer_addr() << "  " << m.client_addr() << "  "
                << (m.id() == resp.leader_id() ? "*" : "") << "\n";
    }
    return 0;
  }
  return RpcError(ep, last);
}

constexpr char kDefaultEndpoints[] = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

// `raftctl [FLAGS] bench WORKLOAD [BENCH FLAGS]` hands over to the load
// generator, passing on the global flags given before the command. Returns
// -1 when the command is not bench.
int MaybeRunBench(int argc, char** argv) {
  std::vector<std::string> global;
  int k = 1;
  for (; k < argc; ++k) {
    const std::string a = argv[k];
    if (a.empty() || a[0] != '-') break;
    global.push_back(a);
    // Flags whose value may be the next argument.
    if ((a == "-w" || a == "--endpoints" || a == "--write-out") && k + 1 < argc) {
      global.push_back(argv[++k]);
    }
  }
  if (k >= argc || std::string(argv[k]) != "bench") return -1;
  std::vector<std::string> args = {"bench"};
  if (k + 1 < argc) args.push_back(argv[k + 1]);  // the workload comes first
  bool has_endpoints = false;
  for (auto& g : global) {
    has_endpoints = has_endpoints || g.rfind("--endpoints", 0) == 0;
    args.push_back(g == "--write-out" ? "-w" : g);
  }
  if (!has_endpoints) {
    const char* env = std::getenv("RAFTKV_ENDPOINTS");
    args.push_back(absl::StrCat("--endpoints=", env != nullptr ? env : kDefaultEndpoints));
  }
  for (int i = k + 2; i < argc; ++i) args.push_back(argv[i]);
  std::vector<char*> bench_argv;
  for (auto& a : args) bench_argv.push_back(a.data());
  bench_argv.push_back(nullptr);
  return bench::BenchMain(static_cast<int>(args.size()), bench_argv.data());
}

int Main(int argc, char** argv) {
  if (int rc = MaybeRunBench(argc, argv); rc >= 0) return rc;
  Options o;
  const char* env = std::getenv("RAFTKV_ENDPOINTS");
  std::string endpoints = env != nullptr ? env : kDefaultEndpoints;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& name, std::string* out) {
      if (a.rfind(name + "=", 0) == 0) {
        *out = a.substr(name.size() + 1);
        return true;
      }
      if (a == name && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      return false;
    };
    std::string v;
    if (a == "-h" || a == "--help" || a == "help") {
      std::cout << kUsage;
      return 0;
    } else if (value("--endpoints", &v)) {
      endpoints = v;
    } else if (value("-w", &v) || value("--write-out", &v)) {
      if (v != "json" && v != "table" && v != "simple") return Error("-w: want table or json");
      o.json = v == "json";
    } else if (value("--timeout_ms", &v)) {
      if (!absl::SimpleAtoi(v, &o.timeout_ms) || o.timeout_ms <= 0)
        return Error("bad --timeout_ms");
    } else if (value("--limit", &v)) {
      if (!absl::SimpleAtoi(v, &o.limit) || o.limit < 0) return Error("bad --limit");
    } else if (value("--client_id", &v)) {
      if (!absl::SimpleAtoi(v, &o.client_id)) return Error("bad --client_id");
    } else if (value("--sequence", &v)) {
      if (!absl::SimpleAtoi(v, &o.sequence)) return Error("bad --sequence");
    } else if (a == "--serializable") {
      o.serializable = true;
    } else if (a == "--absent") {
      o.absent = true;
    } else if (a == "--prev_kv") {
      o.prev_kv = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "--" && pos.empty()) {
      return Error(absl::StrCat("unknown flag ", a, " (see raftctl --help)"));
    } else if (a == "--") {
      for (++i; i < argc; ++i) pos.push_back(argv[i]);
    } else {
      pos.push_back(a);
    }
  }
  o.endpoints = absl::StrSplit(endpoints, ',', absl::SkipWhitespace());
  if (o.endpoints.empty()) return Error("no endpoints");
  if (pos.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  std::string cmd = pos[0];
  std::vector<std::string> args(pos.begin() + 1, pos.end());
  if (cmd == "put") return Put(o, args);
  if (cmd == "get") return Get(o, args);
  if (cmd == "del" || cmd == "delete") return Del(o, args);
  if (cmd == "range") return Range(o, args);
  if (cmd == "cas") return Cas(o, args);
  if (cmd == "status") return Status(o);
  if (cmd == "members") return Members(o);
  return Error(absl::StrCat("unknown command \"", cmd, "\" (see raftctl --help)"));
}

}  // namespace
}  // namespace raftkv::ctl

int main(int argc, char** argv) { return raftkv::ctl::Main(argc, argv); }
