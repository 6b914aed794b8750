#include "storage/state_machine.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/arena.h"
#include "leveldb/filter_policy.h"
#include "leveldb/write_batch.h"
#include "storage/db_util.h"
#include "storage/state_machine_keys.h"

namespace raftkv::storage {

namespace fs = std::filesystem;
using internal::Corrupt;
using internal::FromLevelDb;
using raft::Entry;
using v1::Command;
using v1::CommandResult;
using v1::KeyValue;

namespace internal {

std::string DataKey(std::string_view key) {
  std::string k(1, kDataPrefix);
  k.append(key);
  return k;
}

std::string SessionKey(uint64_t client_id) {
  std::string k(1, kSessionPrefix);
  PutBigEndian64(&k, client_id);
  return k;
}

std::string ExpiryKey(uint64_t last_index, uint64_t client_id) {
  std::string k(1, kExpiryPrefix);
  PutBigEndian64(&k, last_index);
  PutBigEndian64(&k, client_id);
  return k;
}

std::string EncodeState(uint64_t applied, uint64_t term, int64_t revision) {
  std::string v;
  PutBigEndian64(&v, applied);
  PutBigEndian64(&v, term);
  PutBigEndian64(&v, static_cast<uint64_t>(revision));
  return v;
}

bool DecodeState(std::string_view v, uint64_t* applied, uint64_t* term, int64_t* revision) {
  if (v.size() != 24) return false;
  *applied = GetBigEndian64(v.data());
  *term = GetBigEndian64(v.data() + 8);
  *revision = static_cast<int64_t>(GetBigEndian64(v.data() + 16));
  return true;
}

leveldb::Options StateMachineDbOptions(const StateMachineOptions& options,
                                       leveldb::Cache* block_cache, leveldb::Env* env) {
  leveldb::Options lo;
  lo.create_if_missing = true;
  lo.paranoid_checks = true;
  lo.write_buffer_size = options.write_buffer_size;
  lo.block_cache = block_cache;
  lo.compression = options.compress ? leveldb::kSnappyCompression : leveldb::kNoCompression;
  lo.max_file_size = 32 << 20;
  // Most puts look up a key (and a session) that may not exist yet: bloom
  // filters answer those without reading a block from every level. One
  // process-wide policy, never freed (LevelDB needs it as long as any db).
  static const leveldb::FilterPolicy* const kBloom = leveldb::NewBloomFilterPolicy(10);
  lo.filter_policy = kBloom;
  lo.env = env;
  return lo;
}

std::string DbDirName(uint64_t generation) { return absl::StrFormat("db-%06d", generation); }

}  // namespace internal

namespace {

constexpr char kActiveFile[] = "ACTIVE";
constexpr char kActiveTmp[] = "ACTIVE.tmp";
constexpr char kKind[] = "state machine";
// LevelDB keys sort after every key the state machine stores; used to make
// CompactRange flush the memtable without compacting any real data.
constexpr char kFlushBegin[] = "\xff\xfe";
constexpr char kFlushEnd[] = "\xff\xff";

bool ParseDbDirName(std::string_view name, uint64_t* generation) {
  if (name.size() < 4 || name.substr(0, 3) != "db-") return false;
  uint64_t g = 0;
  for (char c : name.substr(3)) {
    if (c < '0' || c > '9') return false;
    g = g * 10 + static_cast<uint64_t>(c - '0');
  }
  *generation = g;
  return g > 0;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Replaces dir/ACTIVE by `content` atomically (write, fsync, rename, fsync dir).
// *renamed tells whether the rename happened (then ACTIVE names `content`
// even if the final directory fsync failed).
absl::Status WriteActive(const std::string& dir, const std::string& content, bool* renamed) {
  *renamed = false;
  const std::string tmp = (fs::path(dir) / kActiveTmp).string();
  const std::string dst = (fs::path(dir) / kActiveFile).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp);
  const std::string data = content + "\n";
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    errno = err;
    return Errno("write", tmp);
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) return Errno("rename to", dst);
  *renamed = true;
  return internal::SyncDir(dir);
}

absl::StatusOr<std::optional<std::string>> ReadActive(const std::string& dir) {
  const fs::path p = fs::path(dir) / kActiveFile;
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    return Errno("open", p.string());
  }
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  int err = errno;
  ::close(fd);
  if (n < 0) {
    errno = err;
    return Errno("read", p.string());
  }
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

namespace {

std::unique_ptr<RowCache> NewRowCache(size_t bytes) {
  return bytes == 0 ? nullptr : std::make_unique<RowCache>(bytes);
}

}  // namespace

StateMachine::StateMachine(std::string dir, const StateMachineOptions& options)
    : dir_(std::move(dir)),
      options_(options),
      block_cache_(options.block_cache_bytes > 0 ? leveldb::NewLRUCache(options.block_cache_bytes)
                                                 : nullptr),
      env_(internal::NewCachingReadEnv(options.env != nullptr ? options.env
                                                              : leveldb::Env::Default())),
      rows_(NewRowCache(options.row_cache_bytes)),
      keys_(options.key_filter_bytes) {}

StateMachine::~StateMachine() = default;

absl::StatusOr<std::unique_ptr<StateMachine>> StateMachine::Open(
    const std::string& dir, const StateMachineOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("state machine directory is empty");
  if (options.snapshot_chunk_bytes == 0) {
    return absl::InvalidArgumentError("snapshot_chunk_bytes must be > 0");
  }
  std::unique_ptr<StateMachine> sm(new StateMachine(dir, options));
  absl::Status s = sm->OpenActive();
  if (!s.ok()) return s;
  return sm;
}

std::string StateMachine::DbDir() const { return (fs::path(dir_) / db_name_).string(); }

absl::Status StateMachine::OpenActive() {
  absl::MutexLock l(&mu_);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the state machine directory ", dir_, ": ", ec.message()));
  }
  absl::StatusOr<std::optional<std::string>> active = ReadActive(dir_);
  if (!active.ok()) return active.status();
  bool write_active = false;
  if (active->has_value()) {
    db_name_ = **active;
    if (!ParseDbDirName(db_name_, &generation_)) {
      return Corrupt({kKind, dir_}, absl::StrCat("the ACTIVE file names '", db_name_,
                                                 "', not a database directory"));
    }
    if (!fs::is_directory(DbDir(), ec)) {
      return Corrupt({kKind, dir_},
                     absl::StrCat("the ACTIVE file names ", db_name_, ", which does not exist"));
    }
  } else {
    // A new state machine, or one whose creation was interrupted before
    // ACTIVE was written (then db-000001 is reused as it is).
    generation_ = 1;
    db_name_ = internal::DbDirName(generation_);
    if (fs::exists(fs::path(dir_) / "CURRENT", ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir_,
          " is a LevelDB database itself, not a state machine directory (which holds an "
          "ACTIVE file and db-NNNNNN databases); is it the log directory?"));
    }
    for (const auto& f : fs::directory_iterator(dir_, ec)) {
      const std::string name = f.path().filename().string();
      uint64_t g;
      if (ParseDbDirName(name, &g) && name != db_name_) {
        return Corrupt({kKind, dir_}, absl::StrCat("it holds database directory ", name,
                                                   " but no ACTIVE file naming the live one"));
      }
    }
    write_active = true;
  }

  const internal::DbName name{kKind, DbDir()};
  absl::Status s = internal::OpenDb(name, internal::StateMachineDbOptions(options_, block_cache_.get(), env_.get()), &db_);
  if (!s.ok()) return s;
  const leveldb::ReadOptions ro = internal::VerifiedRead();
  std::string value;
  leveldb::Status ls = db_->Get(ro, internal::kFormatKey, &value);
  if (ls.IsNotFound()) {
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro));
    it->SeekToFirst();
    if (!it->status().ok()) return FromLevelDb(name, "read", it->status());
    if (it->Valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat(DbDir(), " holds a LevelDB database that is not a raftkv state machine"));
    }
    leveldb::WriteBatch b;
    b.Put(internal::kFormatKey, internal::kFormat);
    b.Put(internal::kStateKey, internal::EncodeState(0, 0, 0));
    leveldb::WriteOptions wo;
    wo.sync = true;
    s = FromLevelDb(name, "initialise", db_->Write(wo, &b));
    if (!s.ok()) return s;
  } else if (!ls.ok()) {
    return FromLevelDb(name, "read format tag", ls);
  } else if (value != internal::kFormat) {
    return absl::FailedPreconditionError(absl::StrCat(DbDir(), " holds a database of format '",
                                                      value, "', not a raftkv state machine"));
  }
  if (write_active) {
    bool renamed;
    s = WriteActive(dir_, db_name_, &renamed);
    if (!s.ok()) return s;
  }
  // Leftovers of an interrupted import, or the old database after a finished
  // one: ACTIVE is the only source of truth.
  for (const auto& f : fs::directory_iterator(dir_, ec)) {
    const std::string n = f.path().filename().string();
    uint64_t g;
    if ((ParseDbDirName(n, &g) && n != db_name_) || n == kActiveTmp) fs::remove_all(f.path(), ec);
  }
  s = LoadState();
  if (!s.ok()) return s;
  if (options_.verify_on_open) {
    // One pass reads every record (checksummed) and fills the key filter.
    keys_.Clear();
    leveldb::ReadOptions scan = ro;
    scan.fill_cache = false;
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(scan));
    for (it->SeekToFirst(); it->Valid() && it->status().ok(); it->Next()) {
      const leveldb::Slice k = it->key();
      if (!k.empty() && k[0] == internal::kDataPrefix) keys_.Add({k.data() + 1, k.size() - 1});
    }
    if (!it->status().ok()) return FromLevelDb(name, "verify every record", it->status());
    return absl::OkStatus();
  }
  return BuildKeyFilter();
}

absl::Status StateMachine::BuildKeyFilter() {
  keys_.Clear();
  if (!keys_.enabled()) return absl::OkStatus();
  leveldb::ReadOptions scan = internal::VerifiedRead();
  scan.fill_cache = false;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(scan));
  const char prefix[1] = {internal::kDataPrefix};
  for (it->Seek(leveldb::Slice(prefix, 1)); it->Valid() && keys_.enabled(); it->Next()) {
    const leveldb::Slice k = it->key();
    if (k.empty() || k[0] != internal::kDataPrefix) break;
    keys_.Add({k.data() + 1, k.size() - 1});
  }
  if (!it->status().ok()) {
    // Half-built, it could deny a stored key: lookups go to LevelDB instead.
    keys_.Disable();
    return FromLevelDb({kKind, DbDir()}, "read every key", it->status());
  }
  return absl::OkStatus();
}

absl::Status StateMachine::LoadState() {
  std::string value;
  leveldb::Status ls = db_->Get(internal::VerifiedRead(), internal::kStateKey, &value);
  if (!ls.ok()) {
    if (ls.IsNotFound()) return Corrupt({kKind, DbDir()}, "the applied-state record is missing");
    return FromLevelDb({kKind, DbDir()}, "read applied state", ls);
  }
  if (!internal::DecodeState(value, &applied_index_, &applied_term_, &revision_)) {
    return Corrupt({kKind, DbDir()}, "the applied-state record is malformed");
  }
  return absl::OkStatus();
}

uint64_t StateMachine::applied_index() const {
  absl::ReaderMutexLock l(&mu_);
  return applied_index_;
}

uint64_t StateMachine::applied_term() const {
  absl::ReaderMutexLock l(&mu_);
  return applied_term_;
}

int64_t StateMachine::revision() const {
  absl::ReaderMutexLock l(&mu_);
  return revision_;
}

namespace {

// Checks that do not depend on configuration: the same on every node, so
// Apply may use them. Empty string = well-formed.
std::string StructuralError(const Command& cmd) {
  if (cmd.client_id() != 0 && cmd.sequence() == 0) {
    return absl::StrCat("command of client ", cmd.client_id(),
                        " has sequence 0; sequences start at 1");
  }
  switch (cmd.op_case()) {
    case Command::kPut:
      if (cmd.put().key().empty()) return "put has an empty key";
      return "";
    case Command::kDelete:
      if (cmd.delete_().key().empty()) return "delete has an empty key";
      return "";
    case Command::kCompareAndSwap:
      if (cmd.compare_and_swap().key().empty()) return "compare-and-swap has an empty key";
      if (cmd.compare_and_swap().expected_case() == v1::CompareAndSwapCommand::EXPECTED_NOT_SET) {
        return "compare-and-swap says nothing to compare (expected_value, "
               "expected_mod_revision or expect_absent)";
      }
      return "";
    case Command::OP_NOT_SET:
      break;
  }
  return "command has no operation (put, delete or compare_and_swap)";
}

absl::Status CheckSize(absl::string_view what, size_t size, size_t limit, const char* option) {
  if (size <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " is ", size, " bytes, over the limit of ",
                                                 limit, " (StateMachineOptions::", option, ")"));
}

CommandResult Invalid(std::string error, int64_t revision) {
  CommandResult r;
  r.set_code(CommandResult::INVALID);
  r.set_error(std::move(error));
  r.set_revision(revision);
  return r;
}

}  // namespace

absl::Status StateMachine::Validate(const Command& cmd) const {
  std::string err = StructuralError(cmd);
  if (!err.empty()) return absl::InvalidArgumentError(err);
  const size_t kmax = options_.max_key_bytes;
  const size_t vmax = options_.max_value_bytes;
  absl::Status s;
  switch (cmd.op_case()) {
    case Command::kPut:
      s = CheckSize("key", cmd.put().key().size(), kmax, "max_key_bytes");
      if (s.ok()) s = CheckSize("value", cmd.put().value().size(), vmax, "max_value_bytes");
      break;
    case Command::kDelete:
      s = CheckSize("key", cmd.delete_().key().size(), kmax, "max_key_bytes");
      break;
    case Command::kCompareAndSwap: {
      const auto& c = cmd.compare_and_swap();
      s = CheckSize("key", c.key().size(), kmax, "max_key_bytes");
      if (s.ok()) s = CheckSize("new value", c.new_value().size(), vmax, "max_value_bytes");
      if (s.ok() && c.has_expected_value()) {
        s = CheckSize("expected value", c.expected_value().size(), vmax, "max_value_bytes");
      }
      break;
    }
    case Command::OP_NOT_SET:
      break;
  }
  return s;
}

absl::Status StateMachine::LoadPrev(std::string_view key, Pending& p, Prev* prev) const {
  *prev = Prev();
  auto it = p.kvs.find(key);
  if (it != p.kvs.end()) {
    const PendingKv& kv = it->second;
    if (kv.value != nullptr) {
      *prev = Prev{kv.value, kv.create_revision, kv.mod_revision, kv.version};
    }
    return absl::OkStatus();
  }
  if (rows_ != nullptr) {
    if (const RowCache::Row* row = rows_->Find(key)) {
      *prev = Prev{&row->value, row->create_revision, row->mod_revision, row->version};
      return absl::OkStatus();
    }
  }
  if (!keys_.MayContain(key)) return absl::OkStatus();
  p.db_key.assign(1, internal::kDataPrefix);
  p.db_key.append(key);
  leveldb::Status ls = db_->Get(internal::VerifiedRead(), p.db_key, &p.db_value);
  if (ls.IsNotFound()) return absl::OkStatus();
  if (!ls.ok()) return FromLevelDb({kKind, DbDir()}, "read a key", ls);
  if (!p.db_kv.ParseFromString(p.db_value)) {
    return Corrupt({kKind, DbDir()}, "a stored value does not parse");
  }
  *prev = Prev{&p.db_kv.value(), p.db_kv.create_revision(), p.db_kv.mod_revision(),
               p.db_kv.version()};
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StateMachine::SessionRef>> StateMachine::LookupSession(
    uint64_t client_id, Pending& p) const {
  auto it = p.sessions.find(client_id);
  if (it != p.sessions.end()) {
    return SessionRef{it->second.sequence, it->second.last_index, true, it->second.result, {}};
  }
  leveldb::Status ls =
      db_->Get(internal::VerifiedRead(), internal::SessionKey(client_id), &p.session_value);
  if (ls.IsNotFound()) {
    p.old_session_index.emplace(client_id, 0);
    return std::nullopt;
  }
  if (!ls.ok()) return FromLevelDb({kKind, DbDir()}, "read a client session", ls);
  if (p.session_value.size() < 16) {
    return Corrupt({kKind, DbDir()},
                   absl::StrCat("session of client ", client_id, " is malformed"));
  }
  SessionRef s;
  s.sequence = internal::GetBigEndian64(p.session_value.data());
  s.last_index = internal::GetBigEndian64(p.session_value.data() + 8);
  s.stored = std::string_view(p.session_value).substr(16);
  p.old_session_index.emplace(client_id, s.last_index);
  return s;
}

absl::Status StateMachine::ApplyCommand(Command& cmd, bool want_prev, Pending& p,
                                        CommandResult* r) const {
  std::string err = StructuralError(cmd);
  if (!err.empty()) {
    *r = Invalid(std::move(err), p.revision);
    return absl::OkStatus();
  }

  const std::string* key;
  switch (cmd.op_case()) {
    case Command::kPut:
      key = &cmd.put().key();
      break;
    case Command::kDelete:
      key = &cmd.delete_().key();
      break;
    default:
      key = &cmd.compare_and_swap().key();
      break;
  }
  Prev prev;
  absl::Status s = LoadPrev(*key, p, &prev);
  if (!s.ok()) return s;
  const bool exists = prev.value != nullptr;
  // A failed compare-and-swap's answer names the key's mod revision.
  if (exists && (want_prev || cmd.op_case() == Command::kCompareAndSwap)) {
    KeyValue* kv = r->mutable_prev_kv();
    kv->set_key(*key);
    kv->set_value(*prev.value);
    kv->set_create_revision(prev.create_revision);
    kv->set_mod_revision(prev.mod_revision);
    kv->set_version(prev.version);
  }

  std::string* new_value = nullptr;
  switch (cmd.op_case()) {
    case Command::kPut:
      new_value = cmd.mutable_put()->mutable_value();
      break;
    case Command::kDelete:
      if (!exists) {
        r->set_code(CommandResult::NOT_FOUND);
        r->set_revision(p.revision);
        return absl::OkStatus();
      }
      ++p.revision;
      p.kvs[*key] = PendingKv{};
      r->set_revision(p.revision);
      return absl::OkStatus();
    default: {
      v1::CompareAndSwapCommand& c = *cmd.mutable_compare_and_swap();
      bool holds = false;
      switch (c.expected_case()) {
        case v1::CompareAndSwapCommand::kExpectedValue:
          holds = exists && *prev.value == c.expected_value();
          break;
        case v1::CompareAndSwapCommand::kExpectedModRevision:
          // As in etcd, mod revision 0 is what an absent key compares as.
          holds = (exists ? prev.mod_revision : 0) == c.expected_mod_revision();
          break;
        case v1::CompareAndSwapCommand::kExpectAbsent:
          holds = exists != c.expect_absent();
          break;
        case v1::CompareAndSwapCommand::EXPECTED_NOT_SET:
          break;
      }
      if (!holds) {
        r->set_code(CommandResult::COMPARE_FAILED);
        r->set_revision(p.revision);
        return absl::OkStatus();
      }
      new_value = c.mutable_new_value();
    }
  }
  ++p.revision;
  PendingKv kv;
  kv.value = new_value;
  kv.mod_revision = p.revision;
  if (exists) {
    kv.create_revision = prev.create_revision;
    kv.version = prev.version + 1;
  } else {
    kv.create_revision = p.revision;
    kv.version = 1;
  }
  p.kvs[*key] = kv;
  r->set_revision(p.revision);
  return absl::OkStatus();
}

absl::Status StateMachine::ExpireSessions(uint64_t applied, uint64_t first_new, Pending& p,
                                          leveldb::WriteBatch* batch, uint64_t* resume) const {
  *resume = expiry_scan_from_;
  // Every expiry key left is at an index >= expiry_scan_from_, so none is
  // dead yet: skip the scan (an iterator over every level costs more than a
  // small Apply).
  if (applied < expiry_scan_from_ || applied - expiry_scan_from_ < options_.session_expiry_entries) {
    return absl::OkStatus();
  }
  // Bounded work per call; the rest goes with the next Apply. Whether a
  // session is live is decided per entry in Apply (by log position), so when
  // a record is physically removed does not affect any result.
  constexpr int kMaxExpiredPerApply = 1024;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(internal::VerifiedRead()));
  int n = 0;
  bool exhausted = true;
  for (it->Seek(internal::ExpiryKey(expiry_scan_from_, 0)); it->Valid(); it->Next()) {
    if (!it->status().ok()) break;
    const leveldb::Slice k = it->key();
    if (k.size() != 17 || k[0] != internal::kExpiryPrefix) break;
    const uint64_t last_index = internal::GetBigEndian64(k.data() + 1);
    const uint64_t client = internal::GetBigEndian64(k.data() + 9);
    // Once this batch is written, no expiry key below this one remains (each
    // index has at most one), and new keys only come at indexes > applied.
    *resume = last_index;
    // Dead for every later entry i > applied: i - last_index > expiry.
    if (applied - last_index < options_.session_expiry_entries || n == kMaxExpiredPerApply) {
      exhausted = false;
      break;
    }
    if (p.sessions.contains(client)) continue;  // re-recorded (and its key replaced) by this batch
    batch->Delete(internal::SessionKey(client));
    batch->Delete(k);
    ++n;
  }
  if (!it->status().ok()) {
    return FromLevelDb({kKind, DbDir()}, "scan client sessions", it->status());
  }
  // Every stored expiry key is deleted or replaced by this batch, whose own
  // keys are at indexes >= first_new.
  if (exhausted) *resume = first_new;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CommandResult>> StateMachine::Apply(const std::vector<Entry>& entries) {
  return Apply(entries, [](uint64_t) { return true; });
}

absl::StatusOr<std::vector<CommandResult>> StateMachine::Apply(
    const std::vector<Entry>& entries, absl::FunctionRef<bool(uint64_t)> wants_prev_kv) {
  std::vector<CommandResult> results;
  results.reserve(entries.size());
  uint64_t applied, applied_term;
  int64_t revision;
  {
    absl::ReaderMutexLock l(&mu_);
    applied = applied_index_;
    applied_term = applied_term_;
    const uint64_t first_new = applied + 1;
    // The call's commands, which pending writes point into until the batch
    // is written. Their submessages and string objects come from the arena
    // instead of several mallocs per command.
    google::protobuf::Arena arena;
    Pending p;
    p.revision = revision_;
    const int64_t start_revision = revision_;
    for (const Entry& e : entries) {
      results.emplace_back();
      if (e.index() <= applied) continue;
      if (e.index() != applied + 1) {
        return absl::FailedPreconditionError(
            absl::StrCat("entry ", e.index(), " cannot be applied after entry ", applied,
                         ": committed entries must be applied in order without gaps"));
      }
      applied = e.index();
      applied_term = e.term();
      if (e.type() != v1::ENTRY_NORMAL) continue;
      CommandResult& r = results.back();
      Command& cmd = *google::protobuf::Arena::CreateMessage<Command>(&arena);
      if (!cmd.ParseFromString(e.data())) {
        r = Invalid(absl::StrCat("entry ", e.index(), " does not hold a well-formed Command"),
                    p.revision);
        continue;
      }
      std::optional<SessionRef> session;
      if (cmd.client_id() != 0) {
        absl::StatusOr<std::optional<SessionRef>> found = LookupSession(cmd.client_id(), p);
        if (!found.ok()) return found.status();
        session = *found;
        if (session && e.index() - session->last_index > options_.session_expiry_entries) {
          session.reset();
        }
      }
      if (session && cmd.sequence() == session->sequence) {
        if (session->pending) {
          r = results[session->result_index];
        } else if (!r.ParseFromArray(session->stored.data(),
                                     static_cast<int>(session->stored.size()))) {
          return Corrupt({kKind, DbDir()},
                         absl::StrCat("session of client ", cmd.client_id(), " is malformed"));
        }
      } else if (session && cmd.sequence() < session->sequence) {
        r = Invalid(absl::StrCat("sequence ", cmd.sequence(), " of client ", cmd.client_id(),
                                 " is older than its last applied sequence ", session->sequence,
                                 "; that result is no longer kept"),
                    p.revision);
      } else {
        // A session's result is stored, so it must not depend on who asked.
        const bool want_prev = cmd.client_id() != 0 || wants_prev_kv(e.index());
        absl::Status s = ApplyCommand(cmd, want_prev, p, &r);
        if (!s.ok()) return s;
        if (cmd.client_id() != 0 && cmd.sequence() != 0) {
          p.sessions[cmd.client_id()] = PendingSession{cmd.sequence(), e.index(), results.size() - 1};
        }
      }
    }
    if (applied == applied_index_) return results;

    leveldb::WriteBatch& batch = apply_batch_;
    batch.Clear();
    uint64_t expiry_resume = 0;
    absl::Status s = ExpireSessions(applied, first_new, p, &batch, &expiry_resume);
    if (!s.ok()) return s;
    // Each key appears at most once, so any order is correct; key order is
    // cheaper. LevelDB inserts a batch's records into its memtable one by
    // one, each a walk down a skiplist whose every step, in a memtable of
    // tens of thousands of random keys, misses the cache (a quarter of a
    // follower's CPU under 1,000 clients' puts). In key order each walk
    // shares the previous one's upper levels, already cached.
    std::vector<std::pair<std::string_view, PendingKv*>> sorted;
    sorted.reserve(p.kvs.size());
    for (auto& [k, pending] : p.kvs) sorted.emplace_back(k, &pending);
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string& key = p.db_key;
    std::string& buf = p.db_value;
    KeyValue kv;
    for (const auto& [k, pending] : sorted) {
      key.assign(1, internal::kDataPrefix);
      key.append(k);
      if (pending->value == nullptr) {
        batch.Delete(key);
        continue;
      }
      // Lent to the record for its serialization, not copied.
      kv.mutable_value()->swap(*pending->value);
      kv.set_create_revision(pending->create_revision);
      kv.set_mod_revision(pending->mod_revision);
      kv.set_version(pending->version);
      buf.clear();
      kv.AppendToString(&buf);
      kv.mutable_value()->swap(*pending->value);
      batch.Put(key, buf);
    }
    for (const auto& [client, session] : p.sessions) {
      const uint64_t old_index = p.old_session_index[client];
      if (old_index != 0) batch.Delete(internal::ExpiryKey(old_index, client));
      buf.clear();
      internal::PutBigEndian64(&buf, session.sequence);
      internal::PutBigEndian64(&buf, session.last_index);
      results[session.result].AppendToString(&buf);
      batch.Put(internal::SessionKey(client), buf);
      batch.Put(internal::ExpiryKey(session.last_index, client), "");
    }
    batch.Put(internal::kStateKey, internal::EncodeState(applied, applied_term, p.revision));
    // The error's context (a path, a message) is built only on failure:
    // DbDir() and StrCat were 14% of a lone put's apply.
    if (leveldb::Status ls = db_->Write(leveldb::WriteOptions(), &batch); !ls.ok()) {
      return FromLevelDb({kKind, DbDir()}, absl::StrCat("apply entries up to ", applied), ls);
    }
    revision = p.revision;
    expiry_scan_from_ = expiry_resume;
    // Only keys this call created: every other stored key is in the filter
    // already. Adding every written key again filled a new layer, twice the
    // size of the last, per million overwrites, and each add touched the
    // newest (largest) one at random: under 1,000 clients' puts to 100,000
    // keys, half a microsecond per put on every node.
    for (const auto& [k, pending] : p.kvs) {
      if (pending.value != nullptr && pending.create_revision > start_revision) keys_.Add(k);
    }
    if (rows_ != nullptr) {
      // The commands are done with: their values move into the cache.
      for (auto& [k, pending] : p.kvs) {
        if (pending.value == nullptr) {
          rows_->Erase(k);
          continue;
        }
        rows_->Put(k, RowCache::Row{std::move(*pending.value), pending.create_revision,
                                    pending.mod_revision, pending.version});
      }
    }
  }
  // Readers may see the new data a moment before the new applied index; they
  // never see an applied index whose data is not there yet.
  absl::MutexLock l(&mu_);
  applied_index_ = applied;
  applied_term_ = applied_term;
  revision_ = revision;
  return results;
}

absl::Status StateMachine::Sync() {
  absl::ReaderMutexLock l(&mu_);
  leveldb::WriteBatch b;
  b.Put(internal::kStateKey, internal::EncodeState(applied_index_, applied_term_, revision_));
  leveldb::WriteOptions wo;
  wo.sync = true;
  absl::Status s = FromLevelDb({kKind, DbDir()}, "sync", db_->Write(wo, &b));
  if (!s.ok()) return s;
  // A synced write makes only the current LevelDB log file durable. Writes
  // still in an older, unsynced log whose memtable is being flushed would be
  // lost by a machine crash; CompactRange first flushes the memtable into a
  // synced table and waits for it (LevelDB 1.23 DBImpl::CompactRange), and
  // the sentinel range holds no data, so nothing else is compacted.
  leveldb::Slice begin(kFlushBegin), end(kFlushEnd);
  db_->CompactRange(&begin, &end);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<KeyValue>> StateMachine::Get(std::string_view key) const {
  absl::ReaderMutexLock l(&mu_);
  std::string value;
  leveldb::Status ls = db_->Get(internal::VerifiedRead(), internal::DataKey(key), &value);
  if (ls.IsNotFound()) return std::nullopt;
  if (!ls.ok()) return FromLevelDb({kKind, DbDir()}, "read a key", ls);
  KeyValue kv;
  if (!kv.ParseFromString(value)) return Corrupt({kKind, DbDir()}, "a stored value does not parse");
  kv.set_key(key.data(), key.size());
  return kv;
}

absl::StatusOr<StateMachine::RangeResult> StateMachine::Range(std::string_view start,
                                                              std::string_view end,
                                                              size_t limit) const {
  if (!end.empty() && end < start) {
    return absl::InvalidArgumentError("range end is below range start");
  }
  absl::ReaderMutexLock l(&mu_);
  RangeResult out;
  const std::string first = internal::DataKey(start);
  const std::string stop =
      end.empty() ? std::string(1, internal::kDataPrefix + 1) : internal::DataKey(end);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(internal::VerifiedRead()));
  for (it->Seek(first); it->Valid() && it->key().compare(stop) < 0; it->Next()) {
    if (!it->status().ok()) break;  // a damaged block: never skip keys silently
    if (limit != 0 && out.kvs.size() == limit) {
      out.more = true;
      break;
    }
    KeyValue kv;
    if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Corrupt({kKind, DbDir()}, "a stored value does not parse");
    }
    kv.set_key(it->key().data() + 1, it->key().size() - 1);
    out.kvs.push_back(std::move(kv));
  }
  if (!it->status().ok()) return FromLevelDb({kKind, DbDir()}, "range scan", it->status());
  return out;
}

absl::StatusOr<StateMachine::RangeResult> StateMachine::RangePrefix(std::string_view prefix,
                                                                    size_t limit) const {
  const std::string end = internal::PrefixSuccessor(prefix);
  return Range(prefix, end, limit);
}

absl::StatusOr<std::unique_ptr<SnapshotReader>> StateMachine::ExportSnapshot() {
  absl::MutexLock l(&mu_);
  const leveldb::Snapshot* snap = db_->GetSnapshot();
  leveldb::ReadOptions ro = internal::VerifiedRead();
  ro.snapshot = snap;
  std::string value;
  uint64_t applied = 0, term = 0;
  int64_t revision = 0;
  absl::Status s = FromLevelDb({kKind, DbDir()}, "read applied state",
                               db_->Get(ro, internal::kStateKey, &value));
  if (s.ok() && !internal::DecodeState(value, &applied, &term, &revision)) {
    s = Corrupt({kKind, DbDir()}, "the applied-state record is malformed");
  }
  if (!s.ok()) {
    db_->ReleaseSnapshot(snap);
    return s;
  }
  std::unique_ptr<SnapshotReader> r(
      new SnapshotReader(this, db_.get(), snap, options_.snapshot_chunk_bytes));
  r->applied_index_ = applied;
  r->applied_term_ = term;
  r->revision_ = revision;
  ++live_readers_;
  return r;
}

void StateMachine::ReleaseReader() {
  absl::MutexLock l(&mu_);
  --live_readers_;
}

void StateMachine::EndImport() {
  absl::MutexLock l(&mu_);
  importing_ = false;
}

absl::StatusOr<std::unique_ptr<SnapshotImport>> StateMachine::BeginImport() {
  std::string name;
  {
    absl::MutexLock l(&mu_);
    if (importing_) {
      return absl::FailedPreconditionError("another snapshot import is in progress");
    }
    importing_ = true;
    name = internal::DbDirName(generation_ + 1);
  }
  const std::string path = (fs::path(dir_) / name).string();
  std::error_code ec;
  fs::remove_all(path, ec);
  std::unique_ptr<leveldb::DB> db;
  absl::Status s = internal::OpenDb({kKind, path}, internal::StateMachineDbOptions(options_, block_cache_.get(), env_.get()), &db);
  if (s.ok()) {
    leveldb::WriteBatch b;
    b.Put(internal::kFormatKey, internal::kFormat);
    s = FromLevelDb({kKind, path}, "initialise", db->Write(leveldb::WriteOptions(), &b));
  }
  if (!s.ok()) {
    db.reset();
    fs::remove_all(path, ec);
    EndImport();
    return s;
  }
  return std::unique_ptr<SnapshotImport>(new SnapshotImport(this, dir_, name, std::move(db)));
}

absl::Status StateMachine::FinishImport(std::unique_ptr<SnapshotImport> import) {
  if (import == nullptr || import->owner_ != this) {
    return absl::InvalidArgumentError("FinishImport needs an import begun on this state machine");
  }
  if (import->failed_ || !import->done_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot import is incomplete: ", import->next_chunk_, " chunk(s) written and ",
        import->failed_ ? "a chunk was rejected" : "the last chunk not seen yet"));
  }
  if (!import->has_meta_) {
    return absl::InvalidArgumentError("imported snapshot has no applied-state record");
  }
  const std::string new_dir = (fs::path(dir_) / import->name_).string();
  leveldb::WriteBatch b;
  b.Put(internal::kFormatKey, internal::kFormat);
  leveldb::WriteOptions wo;
  wo.sync = true;
  absl::Status s =
      FromLevelDb({kKind, new_dir}, "sync the imported snapshot", import->db_->Write(wo, &b));
  if (!s.ok()) return s;
  leveldb::Slice begin(kFlushBegin), end(kFlushEnd);
  import->db_->CompactRange(&begin, &end);

  std::unique_ptr<leveldb::DB> old_db;
  std::string old_dir;
  {
    absl::MutexLock l(&mu_);
    if (live_readers_ > 0) {
      return absl::FailedPreconditionError(absl::StrCat("cannot replace the state machine while ",
                                                        live_readers_,
                                                        " snapshot export(s) are open"));
    }
    bool renamed = false;
    s = WriteActive(dir_, import->name_, &renamed);
    if (!renamed) return s;
    old_dir = DbDir();
    old_db = std::move(db_);
    db_ = std::move(import->db_);
    db_name_ = import->name_;
    ++generation_;
    expiry_scan_from_ = 0;
    rows_ = NewRowCache(options_.row_cache_bytes);
    import->committed_ = true;
    absl::Status load = LoadState();
    if (s.ok()) s = load;
  }
  {
    // Readers need not wait for the scan: only this thread changes db_.
    absl::ReaderMutexLock l(&mu_);
    absl::Status keys = BuildKeyFilter();
    if (s.ok()) s = keys;
  }
  old_db.reset();
  std::error_code ec;
  fs::remove_all(old_dir, ec);  // else removed at the next Open
  return s;
}

}  // namespace raftkv::storage
