#include "bench/options.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace raftkv::bench {
namespace {

absl::Status Bad(absl::string_view flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

absl::StatusOr<int64_t> ParseInt(absl::string_view flag, absl::string_view text, int64_t lo,
                                 int64_t hi) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) return Bad(flag, absl::StrCat("not an integer: '", text, "'"));
  if (v < lo || v > hi) {
    return Bad(flag, absl::StrCat(v, " is out of range [", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<double> ParseDouble(absl::string_view flag, absl::string_view text, double lo,
                                   double hi) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
    return Bad(flag, absl::StrCat("not a number: '", text, "'"));
  }
  if (v < lo || v > hi) return Bad(flag, absl::StrCat(v, " is out of range [", lo, ", ", hi, "]"));
  return v;
}

// "10s", "250ms", "2m", or a bare number of seconds.
absl::StatusOr<absl::Duration> ParseSeconds(absl::string_view flag, absl::string_view text,
                                            absl::Duration hi) {
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return Bad(flag, absl::StrCat("not a duration (e.g. 10s, 500ms): '", text, "'"));
  }
  if (d < absl::ZeroDuration() || d > hi) {
    return Bad(flag, absl::StrCat(absl::FormatDuration(d), " is out of range [0, ",
                                  absl::FormatDuration(hi), "]"));
  }
  return d;
}

// Flags that take no value.
bool IsSwitch(absl::string_view name) {
  return name == "help" || name == "prefill" || name == "allow-remote";
}

}  // namespace

absl::StatusOr<HostPort> SplitEndpoint(const std::string& endpoint) {
  absl::string_view e = endpoint;
  absl::ConsumePrefix(&e, "http://");
  absl::string_view host;
  absl::string_view port;
  if (absl::ConsumePrefix(&e, "[")) {
    const size_t close = e.find("]:");
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint '", endpoint, "' is not [host]:port"));
    }
    host = e.substr(0, close);
    port = e.substr(close + 2);
  } else {
    const size_t colon = e.rfind(':');
    if (colon == absl::string_view::npos || e.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat("endpoint '", endpoint, "' is not host:port"));
    }
    host = e.substr(0, colon);
    port = e.substr(colon + 1);
  }
  int port_number = 0;
  if (host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number <= 0 ||
      port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint '", endpoint, "' is not host:port"));
  }
  return HostPort{std::string(host), port_number};
}

absl::StatusOr<bool> IsLoopbackEndpoint(const std::string& endpoint) {
  absl::StatusOr<HostPort> split = SplitEndpoint(endpoint);
  if (!split.ok()) return split.status();
  const std::string& host = split->host;
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4) return false;
  for (absl::string_view o : octets) {
    int v = 0;
    if (!absl::SimpleAtoi(o, &v) || v < 0 || v > 255) return false;
  }
  return octets[0] == "127";
}

absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv) {
  Options o;
  o.max_duration = absl::Minutes(10);
  o.timeout = absl::Seconds(10);
  o.threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1,
                         Options::kMaxThreads);
  std::vector<std::pair<std::string, std::string>> flags;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "-w") {
      if (i + 1 >= argc) return Bad("write-out", "needs a value (json or text)");
      flags.emplace_back("write-out", argv[++i]);
      continue;
    }
    if (arg == "-h") arg = "--help";
    if (!absl::ConsumePrefix(&arg, "--")) {
      positional.emplace_back(arg);
      continue;
    }
    std::string name;
    std::string value;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else if (IsSwitch(arg)) {
      name = std::string(arg);
      value = "true";
    } else {
      name = std::string(arg);
      if (i + 1 >= argc) return Bad(name, "needs a value");
      value = argv[++i];
    }
    absl::StrReplaceAll({{"_", "-"}}, &name);
    flags.emplace_back(std::move(name), std::move(value));
  }

  bool api_set_endpoints = false;
  for (const auto& [name, value] : flags) {
    if (name == "help") {
      o.help = true;
      return o;
    }
  }
  if (positional.size() != 1) {
    return absl::InvalidArgumentError(
        "expected exactly one workload (put, get or mixed); try --help");
  }
  if (positional[0] == "put") {
    o.workload = Workload::kPut;
  } else if (positional[0] == "get") {
    o.workload = Workload::kGet;
  } else if (positional[0] == "mixed") {
    o.workload = Workload::kMixed;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown workload '", positional[0], "' (want put, get or mixed)"));
  }

  for (const auto& [name, value] : flags) {
    if (name == "endpoints") {
      o.endpoints.clear();
      for (absl::string_view e : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
        e = absl::StripAsciiWhitespace(e);
        absl::ConsumePrefix(&e, "http://");
        o.endpoints.emplace_back(e);
      }
      if (o.endpoints.empty()) return Bad(name, "no endpoint given");
      api_set_endpoints = true;
    } else if (name == "api") {
      if (value == "raftkv") {
        o.api = Api::kRaftkv;
      } else if (value == "etcd") {
        o.api = Api::kEtcd;
      } else {
        return Bad(name, absl::StrCat("unknown api '", value, "' (want raftkv or etcd)"));
      }
    } else if (name == "target") {
      if (value == "leader") {
        o.target = Target::kLeader;
      } else if (value == "all") {
        o.target = Target::kAll;
      } else {
        return Bad(name, absl::StrCat("unknown target '", value, "' (want leader or all)"));
      }
    } else if (name == "conns") {
      auto v = ParseInt(name, value, 1, Options::kMaxConns);
      if (!v.ok()) return v.status();
      o.conns = static_cast<int>(*v);
    } else if (name == "clients") {
      auto v = ParseInt(name, value, 1, Options::kMaxClients);
      if (!v.ok()) return v.status();
      o.clients = static_cast<int>(*v);
    } else if (name == "threads") {
      auto v = ParseInt(name, value, 1, Options::kMaxThreads);
      if (!v.ok()) return v.status();
      o.threads = static_cast<int>(*v);
    } else if (name == "total") {
      auto v = ParseInt(name, value, 0, Options::kMaxTotal);
      if (!v.ok()) return v.status();
      o.total = static_cast<uint64_t>(*v);
    } else if (name == "duration") {
      auto v = ParseSeconds(name, value, absl::Hours(1));
      if (!v.ok()) return v.status();
      o.duration = *v;
    } else if (name == "max-duration") {
      auto v = ParseSeconds(name, value, absl::Hours(1));
      if (!v.ok()) return v.status();
      if (*v == absl::ZeroDuration()) return Bad(name, "must be positive");
      o.max_duration = *v;
    } else if (name == "warmup") {
      auto v = ParseSeconds(name, value, absl::Minutes(10));
      if (!v.ok()) return v.status();
      o.warmup = *v;
    } else if (name == "timeout") {
      auto v = ParseSeconds(name, value, absl::Minutes(10));
      if (!v.ok()) return v.status();
      if (*v <= absl::ZeroDuration()) return Bad(name, "must be positive");
      o.timeout = *v;
    } else if (name == "rate") {
      auto v = ParseDouble(name, value, 0, 10'000'000);
      if (!v.ok()) return v.status();
      o.rate = *v;
    } else if (name == "key-size") {
      auto v = ParseInt(name, value, 1, 4096);
      if (!v.ok()) return v.status();
      o.key_size = static_cast<int>(*v);
    } else if (name == "key-space") {
      if (value == "one") {
        o.key_space = KeySpace::kOne;
      } else if (value == "sequential") {
        o.key_space = KeySpace::kSequential;
      } else if (value == "random") {
        o.key_space = KeySpace::kRandom;
      } else {
        return Bad(
            name, absl::StrCat("unknown key space '", value, "' (want one, sequential or random)"));
      }
    } else if (name == "keys") {
      auto v = ParseInt(name, value, 1, Options::kMaxTotal);
      if (!v.ok()) return v.status();
      o.keys = static_cast<uint64_t>(*v);
    } else if (name == "val-size") {
      auto v = ParseInt(name, value, 0, 1 << 20);
      if (!v.ok()) return v.status();
      o.val_size = static_cast<int>(*v);
    } else if (name == "consistency") {
      if (value == "l") {
        o.serializable = false;
      } else if (value == "s") {
        o.serializable = true;
      } else {
        return Bad(name, absl::StrCat("unknown consistency '", value,
                                      "' (want l for linearizable or s for serializable)"));
      }
    } else if (name == "read-fraction") {
      auto v = ParseDouble(name, value, 0, 1);
      if (!v.ok()) return v.status();
      o.read_fraction = *v;
    } else if (name == "prefill") {
      o.prefill = value != "false";
    } else if (name == "allow-remote") {
      o.allow_remote = value != "false";
    } else if (name == "coalesce-sends") {
      if (value != "true" && value != "false") {
        return Bad(name, absl::StrCat("want true or false, not '", value, "'"));
      }
      o.coalesce_sends = value == "true";
    } else if (name == "write-out" || name == "w") {
      if (value == "json") {
        o.json = true;
      } else if (value == "text" || value == "simple") {
        o.json = false;
      } else {
        return Bad("write-out", absl::StrCat("unknown format '", value, "' (want json or text)"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, "; try --help"));
    }
  }

  if (!api_set_endpoints) {
    o.endpoints = {o.api == Api::kEtcd ? "127.0.0.1:2379" : "127.0.0.1:7001"};
  }
  for (const std::string& e : o.endpoints) {
    auto loopback = IsLoopbackEndpoint(e);
    if (!loopback.ok()) return Bad("endpoints", loopback.status().message());
    if (!*loopback && !o.allow_remote) {
      return Bad("endpoints", absl::StrCat("'", e,
                                           "' is not a loopback address; pass --allow-remote to "
                                           "load a remote service"));
    }
  }
  if (o.conns > o.clients) {
    return Bad("conns", absl::StrCat(o.conns, " connections for ", o.clients,
                                     " clients would leave connections idle"));
  }
  // A thread with no client would only poll an empty queue.
  o.threads = std::min(o.threads, o.clients);
  if (o.key_size < 20) {
    uint64_t capacity = 1;
    for (int i = 0; i < o.key_size; ++i) capacity *= 10;
    if (o.keys > capacity) {
      return Bad("keys", absl::StrCat(o.keys, " distinct keys do not fit in ", o.key_size,
                                      "-byte keys (at most ", capacity, ")"));
    }
  }
  if (o.total == 0 && o.duration == absl::ZeroDuration()) o.total = 10'000;
  if (o.total == 0) o.total = Options::kMaxTotal;
  if (o.duration == absl::ZeroDuration()) o.duration = o.max_duration;
  return o;
}

std::string Usage() {
  return R"(usage: bench put|get|mixed [flags]

Drives a raftkv (or etcd v3) cluster with concurrent asynchronous clients and
reports throughput, latency percentiles and errors by status code.

  --endpoints=H:P,...    service endpoints (default 127.0.0.1:7001; etcd: 127.0.0.1:2379);
                         loopback only unless --allow-remote
  --api=raftkv|etcd      raftkv.v1.KV, or etcdserverpb.KV (Put, Range)   [raftkv]
  --target=leader|all    send to the leader only, or spread over all endpoints [leader]
                         (raftkv finds the leader through Cluster/Status; for etcd
                         the first endpoint is taken as the leader)
  --conns=N              gRPC connections (separate TCP connections)   [1]
  --clients=N            concurrent clients, one call outstanding each  [1]
  --threads=N            threads polling gRPC completion queues; each client
                         belongs to one (more than --clients are not started)
                                                            [one per core]
  --total=N              stop after N calls                [10000 unless --duration]
  --duration=T           stop after T (e.g. 10s)            [no limit]
  --max-duration=T       time bound of a --total run        [10m]
  --warmup=T             unrecorded load before measuring   [0]
  --rate=R               target calls per second, all clients together [unlimited]
  --key-size=N           key length in bytes                [8]
  --key-space=one|sequential|random                         [random]
  --keys=N               number of distinct keys            [100000]
  --val-size=N           value length in bytes              [256]
  --consistency=l|s      reads: linearizable or serializable [l]
  --read-fraction=F      mixed: share of reads, 0..1        [0.5]
  --prefill              write every key once before a get or mixed run
                         (with --key-space=one the key is always written first)
  --timeout=T            per-call deadline                  [10s]
  --coalesce-sends=B     true: the calls a thread starts in one burst (as the
                         answers of one batch come in) leave each connection in
                         as few TCP segments as they fill, as grpc-go clients
                         send them; false: one segment per call   [true]
  -w json                machine-readable result on stdout

Exit status: 0 when every call succeeded, 1 on bad flags or no connection,
3 when some calls failed (the report is still printed).
)";
}

}  // namespace raftkv::bench
