#include "tests/storage/crash_workload.h"

namespace raftkv::storage::testing {
namespace {

bool IsNoop(uint64_t i) { return i % 7 == 0; }
bool IsPlainCommand(uint64_t i) { return i >= 1 && !IsNoop(i) && i % 11 != 0; }

v1::Command PlainCommand(uint64_t i) {
  v1::Command c;
  c.set_client_id(1 + i % 4);
  c.set_sequence(i);
  const std::string key = "k" + std::to_string(i % 50);
  if (i % 13 == 0) {
    c.mutable_delete_()->set_key(key);
  } else {
    c.mutable_put()->set_key(key);
    c.mutable_put()->set_value("v" + std::to_string(i));
  }
  return c;
}

}  // namespace

raft::Entry WorkloadEntry(uint64_t index, uint64_t term) {
  raft::Entry e;
  e.set_index(index);
  e.set_term(term);
  if (IsNoop(index)) {
    e.set_type(v1::ENTRY_NOOP);
  } else if (index % 11 == 0 && index > 3 && IsPlainCommand(index - 3)) {
    e.set_data(PlainCommand(index - 3).SerializeAsString());
  } else {
    e.set_data(PlainCommand(index).SerializeAsString());
  }
  return e;
}

ExpectedState ExpectedStateAt(uint64_t applied) {
  // Only plain commands change data: retries repeat the client's latest
  // sequence, so exactly-once turns them into no-ops.
  ExpectedState st;
  for (uint64_t i = 1; i <= applied; ++i) {
    if (IsNoop(i) || (i % 11 == 0 && i > 3 && IsPlainCommand(i - 3))) continue;
    const v1::Command c = PlainCommand(i);
    if (c.has_delete_()) {
      if (st.kvs.erase(c.delete_().key()) > 0) ++st.revision;
      continue;
    }
    ++st.revision;
    v1::KeyValue& kv = st.kvs[c.put().key()];
    if (kv.version() == 0) kv.set_create_revision(st.revision);
    kv.set_key(c.put().key());
    kv.set_value(c.put().value());
    kv.set_mod_revision(st.revision);
    kv.set_version(kv.version() + 1);
  }
  return st;
}

}  // namespace raftkv::storage::testing
