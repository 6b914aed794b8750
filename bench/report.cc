#include "bench/report.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace raftkv::bench {
namespace {

const char* Name(Workload w) {
  switch (w) {
    case Workload::kPut:
      return "put";
    case Workload::kGet:
      return "get";
    case Workload::kMixed:
      return "mixed";
  }
  return "?";
}

const char* Name(KeySpace k) {
  switch (k) {
    case KeySpace::kOne:
      return "one";
    case KeySpace::kSequential:
      return "sequential";
    case KeySpace::kRandom:
      return "random";
  }
  return "?";
}

double Throughput(const PhaseResult& r) {
  const double s = absl::ToDoubleSeconds(r.elapsed);
  return s > 0 ? static_cast<double>(r.ok) / s : 0;
}

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

std::string FormatText(const Options& o, const std::string& target, const PhaseResult& r) {
  const Histogram& h = r.latency_ns;
  std::string out = absl::StrFormat(
      "%s against %s (%s): %d conns, %d clients, %d threads, %d-byte keys (%s), %d-byte "
      "values%s\n",
      Name(o.workload), o.api == Api::kEtcd ? "etcd" : "raftkv", target, o.conns, o.clients,
      o.threads, o.key_size,
      o.key_space == KeySpace::kOne ? std::string("one key")
                                    : absl::StrCat(Name(o.key_space), " of ", o.keys),
      o.val_size,
      o.workload == Workload::kPut
          ? ""
          : (o.serializable ? ", serializable reads" : ", linearizable reads"));
  absl::StrAppendFormat(&out, "calls        %d ok, %d failed in %.3f s\n", r.ok, r.error_count(),
                        absl::ToDoubleSeconds(r.elapsed));
  absl::StrAppendFormat(&out, "throughput   %.1f ops/s\n", Throughput(r));
  absl::StrAppendFormat(&out,
                        "latency ms   avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
                        "max %.3f\n",
                        h.Mean() / 1e6, Ms(h.ValueAtPercentile(50)), Ms(h.ValueAtPercentile(90)),
                        Ms(h.ValueAtPercentile(99)), Ms(h.ValueAtPercentile(99.9)), Ms(h.max()));
  if (r.errors.empty()) {
    out += "errors       none\n";
  } else {
    for (const auto& [code, e] : r.errors) {
      absl::StrAppendFormat(&out, "errors       %s: %d (first: %s)\n", StatusCodeName(code),
                            e.count, e.first_message);
    }
  }
  return out;
}

std::string FormatJson(const Options& o, const std::string& target, const PhaseResult& r) {
  const Histogram& h = r.latency_ns;
  std::vector<std::string> endpoints;
  for (const auto& e : o.endpoints) endpoints.push_back(JsonString(e));
  std::vector<std::string> errors;
  for (const auto& [code, e] : r.errors) {
    errors.push_back(absl::StrFormat("%s: {\"count\": %d, \"message\": %s}",
                                     JsonString(StatusCodeName(code)), e.count,
                                     JsonString(e.first_message)));
  }
  std::string out = "{";
  absl::StrAppendFormat(&out, "\"workload\": \"%s\", \"api\": \"%s\", \"target\": %s, ",
                        Name(o.workload), o.api == Api::kEtcd ? "etcd" : "raftkv",
                        JsonString(target));
  absl::StrAppendFormat(&out, "\"endpoints\": [%s], ", absl::StrJoin(endpoints, ", "));
  absl::StrAppendFormat(&out,
                        "\"conns\": %d, \"clients\": %d, \"threads\": %d, \"key_size\": %d, "
                        "\"key_space\": \"%s\", \"keys\": %d, \"val_size\": %d, "
                        "\"consistency\": \"%s\", \"rate\": %g, \"coalesce_sends\": %s, ",
                        o.conns, o.clients, o.threads, o.key_size, Name(o.key_space), o.keys,
                        o.val_size, o.serializable ? "s" : "l", o.rate,
                        o.coalesce_sends ? "true" : "false");
  absl::StrAppendFormat(&out,
                        "\"ok\": %d, \"failed\": %d, \"elapsed_s\": %.6f, \"throughput\": %.3f, ",
                        r.ok, r.error_count(), absl::ToDoubleSeconds(r.elapsed), Throughput(r));
  absl::StrAppendFormat(&out,
                        "\"latency_ms\": {\"avg\": %.6f, \"min\": %.6f, \"p50\": %.6f, \"p90\": "
                        "%.6f, \"p99\": %.6f, \"p99_9\": %.6f, \"max\": %.6f}, ",
                        h.Mean() / 1e6, Ms(h.min()), Ms(h.ValueAtPercentile(50)),
                        Ms(h.ValueAtPercentile(90)), Ms(h.ValueAtPercentile(99)),
                        Ms(h.ValueAtPercentile(99.9)), Ms(h.max()));
  absl::StrAppendFormat(&out, "\"errors\": {%s}}", absl::StrJoin(errors, ", "));
  return out;
}

std::string FormatProgress(const Progress& p) {
  const double s = absl::ToDoubleSeconds(p.elapsed);
  return absl::StrFormat("[%6.1fs] %d ok  %d failed  %.0f ops/s", s, p.ok, p.failed,
                         s > 0 ? static_cast<double>(p.ok) / s : 0.0);
}

}  // namespace raftkv::bench
