#include "storage/log_store.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "leveldb/write_batch.h"
#include "storage/db_util.h"

namespace raftkv::storage {

using internal::Corrupt;
using internal::FromLevelDb;
using raft::ConfState;
using raft::Entry;
using raft::HardState;
using raft::SnapshotMetadata;

namespace {

// The metadata keys sort before every entry key. LevelDB moves a table it
// flushes down the levels untouched when its key range overlaps no other
// table's; entries arrive in key order, so only a metadata key sorting
// after them (as format 1's "h:" keys did) makes the ranges overlap, and
// then every flush was merged into the tables below (tens of MiB rewritten
// per 16 MiB flushed, competing with the log's fsyncs for the disk).
constexpr char kFormatKey[] = "a:format";
constexpr char kFormat[] = "raftkv-log-2";
constexpr char kIdentityKey[] = "a:identity";
constexpr char kHardStateKey[] = "a:hard";
constexpr char kSnapshotKey[] = "a:snapshot";
constexpr char kEntryPrefix = 'e';
// Format 1: the same values under "h:" keys (upgraded on open).
constexpr char kFormat1Key[] = "h:format";
constexpr char kFormat1[] = "raftkv-log-1";
constexpr std::pair<const char*, const char*> kFormat1Keys[] = {
    {"h:identity", kIdentityKey}, {"h:hard", kHardStateKey}, {"h:snapshot", kSnapshotKey}};
constexpr size_t kEntryKeySize = 9;

std::string EntryKey(uint64_t index) {
  std::string k(1, kEntryPrefix);
  internal::PutBigEndian64(&k, index);
  return k;
}

bool IsEntryKey(const leveldb::Slice& k) {
  return k.size() == kEntryKeySize && k[0] == kEntryPrefix;
}

absl::Status NotALogStoreFormat(const std::string& dir, const std::string& format) {
  return absl::FailedPreconditionError(absl::StrCat(dir, " holds a database of format '", format,
                                                    "', not a raftkv log store ('", kFormat, "')"));
}

// Identity value: node id as 8 big-endian bytes, then the cluster id.
std::string EncodeIdentity(const std::string& cluster_id, uint64_t node_id) {
  std::string v;
  internal::PutBigEndian64(&v, node_id);
  v += cluster_id;
  return v;
}

}  // namespace

LogStore::LogStore(std::string dir, const LogStoreOptions& options)
    : dir_(std::move(dir)), options_(options) {}

LogStore::~LogStore() = default;

absl::StatusOr<std::unique_ptr<LogStore>> LogStore::Open(const std::string& dir,
                                                         const LogStoreOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("log store directory is empty");
  std::unique_ptr<LogStore> store(new LogStore(dir, options));
  leveldb::Options lo;
  lo.create_if_missing = true;
  lo.paranoid_checks = true;
  lo.write_buffer_size = options.write_buffer_size;
  lo.max_file_size = options.max_file_size;
  // Entries are mostly small protobufs; snappy would cost CPU on every block.
  lo.compression = leveldb::kNoCompression;
  // Every Save is a synced append to LevelDB's write-ahead log; allocating
  // the log up front makes each of those fdatasyncs cheaper (db_util.h). A
  // log is replaced once a memtable's worth of writes went through it.
  store->env_ = internal::NewPreallocatingLogEnv(
      options.env != nullptr ? options.env : leveldb::Env::Default(),
      options.write_buffer_size + (4 << 20));
  lo.env = store->env_.get();
  absl::StatusOr<std::vector<internal::TornTailRepair>> repairs =
      internal::RepairTornLogTail(lo.env, dir);
  if (!repairs.ok()) {
    return absl::Status(repairs.status().code(),
                        absl::StrCat("raft log store ", dir, ": checking the write-ahead log for a "
                                     "torn write failed: ", repairs.status().message()));
  }
  for (const internal::TornTailRepair& r : *repairs) {
    store->open_notes_.push_back(absl::StrCat(
        "cut a write torn by a crash (never acknowledged) off ", r.file, ": ",
        r.old_size - r.truncated_at, " bytes from offset ", r.truncated_at));
  }
  absl::Status s = internal::OpenDb({"raft log store", dir}, lo, &store->db_);
  if (!s.ok()) return s;
  s = store->Load();
  if (!s.ok()) return s;
  return store;
}

absl::Status LogStore::Load() {
  absl::MutexLock l(&mu_);
  const internal::DbName name{"raft log store", dir_};
  const leveldb::ReadOptions ro = internal::VerifiedRead();
  if (absl::Status u = UpgradeFromFormat1(); !u.ok()) return u;
  std::string value;
  leveldb::Status s = db_->Get(ro, kFormatKey, &value);
  if (s.IsNotFound()) {
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro));
    it->SeekToFirst();
    if (!it->status().ok()) return FromLevelDb(name, "read", it->status());
    if (it->Valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir_, " holds a LevelDB database that is not a raftkv log store (no ",
                       kFormatKey, " key); point the log at its own directory"));
    }
    leveldb::WriteBatch b;
    b.Put(kFormatKey, kFormat);
    return Write(&b, "initialise");
  }
  if (!s.ok()) return FromLevelDb(name, "read format tag", s);
  if (value != kFormat) return NotALogStoreFormat(dir_, value);

  s = db_->Get(ro, kHardStateKey, &value);
  if (s.ok()) {
    if (!hard_state_.ParseFromString(value)) return Corrupt(name, "the hard state does not parse");
    has_hard_state_ = true;
  } else if (!s.IsNotFound()) {
    return FromLevelDb(name, "read hard state", s);
  }
  s = db_->Get(ro, kSnapshotKey, &value);
  if (s.ok()) {
    if (!snapshot_.ParseFromString(value)) {
      return Corrupt(name, "the snapshot metadata does not parse");
    }
    has_snapshot_ = true;
  } else if (!s.IsNotFound()) {
    return FromLevelDb(name, "read snapshot metadata", s);
  }

  // Read (and so checksum) every entry once; rebuild the term runs and the
  // cache, and check that the log is contiguous from the snapshot on. The
  // scan starts after the snapshot so it does not wade through the
  // tombstones of compacted entries (google/leveldb#777).
  last_index_ = snapshot_.index();
  uint64_t last_term = snapshot_.term();
  leveldb::ReadOptions scan = ro;
  scan.fill_cache = false;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(scan));
  for (it->Seek(EntryKey(snapshot_.index() + 1)); it->Valid() && IsEntryKey(it->key());
       it->Next()) {
    // A damaged block makes LevelDB's iterator skip to the next one with its
    // status set: check at every step, or the damage looks like a gap.
    if (!it->status().ok()) break;
    const uint64_t index = internal::GetBigEndian64(it->key().data() + 1);
    if (index != last_index_ + 1) {
      return Corrupt(name, absl::StrCat("the log has a gap: entry ", last_index_ + 1,
                                        " is missing before entry ", index));
    }
    Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Corrupt(name, absl::StrCat("entry ", index, " does not parse"));
    }
    if (e.index() != index || e.term() < last_term) {
      return Corrupt(name, absl::StrCat("entry under key ", index, " has index ", e.index(),
                                        " and term ", e.term(), " after term ", last_term));
    }
    last_term = e.term();
    AppendToCache(e);
    last_index_ = index;
  }
  if (!it->status().ok()) return FromLevelDb(name, "read the log", it->status());
  if (has_hard_state_ && hard_state_.commit() > last_index_) {
    return Corrupt(name, absl::StrCat("the hard state commits index ", hard_state_.commit(),
                                      " but the log ends at ", last_index_));
  }
  return absl::OkStatus();
}

absl::Status LogStore::UpgradeFromFormat1() {
  const internal::DbName name{"raft log store", dir_};
  const leveldb::ReadOptions ro = internal::VerifiedRead();
  std::string value;
  leveldb::Status s = db_->Get(ro, kFormat1Key, &value);
  if (s.IsNotFound()) return absl::OkStatus();
  if (!s.ok()) return FromLevelDb(name, "read format tag", s);
  if (value != kFormat1) return NotALogStoreFormat(dir_, value);
  // A handful of keys, moved in one batch: a crash leaves format 1 or 2.
  leveldb::WriteBatch b;
  b.Delete(kFormat1Key);
  b.Put(kFormatKey, kFormat);
  for (const auto& [old_key, new_key] : kFormat1Keys) {
    s = db_->Get(ro, old_key, &value);
    if (s.IsNotFound()) continue;
    if (!s.ok()) return FromLevelDb(name, absl::StrCat("read ", old_key), s);
    b.Put(new_key, value);
    b.Delete(old_key);
  }
  if (absl::Status w = Write(&b, "upgrade the log from format 1"); !w.ok()) return w;
  open_notes_.push_back(absl::StrCat("upgraded ", dir_, " from format ", kFormat1, " to ", kFormat,
                                     " (its metadata keys now sort before the entries)"));
  return absl::OkStatus();
}

absl::Status LogStore::Write(leveldb::WriteBatch* batch, absl::string_view what, bool sync) {
  leveldb::WriteOptions wo;
  wo.sync = options_.sync && sync;
  // On every Ready: the error's DbName (a copy of dir_) only on failure.
  leveldb::Status s = db_->Write(wo, batch);
  if (s.ok()) return absl::OkStatus();
  return FromLevelDb({"raft log store", dir_}, what, s);
}

absl::Status LogStore::CheckIdentity(const std::string& cluster_id, uint64_t node_id) {
  if (cluster_id.empty() || node_id == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("node identity needs a non-empty cluster id and a non-zero node id (got "
                     "cluster '",
                     cluster_id, "', node ", node_id, ")"));
  }
  absl::MutexLock l(&mu_);
  std::string value;
  leveldb::Status s = db_->Get(internal::VerifiedRead(), kIdentityKey, &value);
  if (s.IsNotFound()) {
    leveldb::WriteBatch b;
    b.Put(kIdentityKey, EncodeIdentity(cluster_id, node_id));
    return Write(&b, "record node identity");
  }
  if (!s.ok()) return FromLevelDb({"raft log store", dir_}, "read node identity", s);
  if (value.size() < 8) return Corrupt({"raft log store", dir_}, "the node identity is truncated");
  const uint64_t stored_node = internal::GetBigEndian64(value.data());
  const std::string stored_cluster = value.substr(8);
  if (stored_node != node_id || stored_cluster != cluster_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", dir_, " belongs to node ", stored_node, " of cluster '", stored_cluster,
        "', not node ", node_id, " of cluster '", cluster_id,
        "'; give this node its own data directory, or fix its --node-id / cluster id"));
  }
  return absl::OkStatus();
}

bool LogStore::IsEmpty() const {
  absl::MutexLock l(&mu_);
  return !has_hard_state_ && !has_snapshot_ && last_index_ == 0;
}

absl::Status LogStore::Bootstrap(const ConfState& conf) {
  if (conf.voters().empty()) {
    return absl::InvalidArgumentError("bootstrap membership has no voter");
  }
  std::set<uint64_t> seen;
  for (const auto* list : {&conf.voters(), &conf.learners(), &conf.voters_outgoing()}) {
    for (uint64_t id : *list) {
      if (id == 0) return absl::InvalidArgumentError("bootstrap membership contains node id 0");
      if (list != &conf.voters_outgoing() && !seen.insert(id).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("bootstrap membership lists node ", id, " twice"));
      }
    }
  }
  absl::MutexLock l(&mu_);
  if (has_hard_state_ || has_snapshot_ || last_index_ != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot bootstrap ", dir_, ": the log already holds state (last index ",
                     last_index_, ", term ", hard_state_.term(), ")"));
  }
  SnapshotMetadata meta;
  *meta.mutable_conf_state() = conf;
  leveldb::WriteBatch b;
  b.Put(kSnapshotKey, meta.SerializeAsString());
  absl::Status s = Write(&b, "bootstrap");
  if (!s.ok()) return s;
  snapshot_ = meta;
  has_snapshot_ = true;
  return absl::OkStatus();
}

absl::Status LogStore::ValidateHardState(const HardState& hs, uint64_t new_last) const {
  const HardState& old = hard_state_;
  if (hs.term() < old.term()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hard state term would go back from ", old.term(), " to ", hs.term()));
  }
  if (hs.term() == old.term() && old.vote() != 0 && hs.vote() != old.vote()) {
    return absl::InvalidArgumentError(absl::StrCat("hard state would change the vote of term ",
                                                   hs.term(), " from ", old.vote(), " to ",
                                                   hs.vote()));
  }
  if (hs.commit() < old.commit()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hard state commit would go back from ", old.commit(), " to ", hs.commit()));
  }
  if (hs.commit() > new_last) {
    return absl::InvalidArgumentError(absl::StrCat("hard state commits index ", hs.commit(),
                                                   " beyond the last log index ", new_last));
  }
  return absl::OkStatus();
}

absl::Status LogStore::Save(std::vector<Entry> entries,
                            const std::optional<HardState>& hard_state, bool sync) {
  if (entries.empty() && !hard_state.has_value()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  uint64_t new_last = last_index_;
  if (!entries.empty()) {
    const uint64_t first = entries.front().index();
    if (first <= snapshot_.index()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot append at index ", first,
                                                     ": entries up to ", snapshot_.index(),
                                                     " are compacted into a snapshot"));
    }
    if (first > last_index_ + 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "append at index ", first, " would leave a gap after the last index ", last_index_));
    }
    absl::StatusOr<uint64_t> prev_term = TermLocked(first - 1);
    if (!prev_term.ok()) return prev_term.status();
    uint64_t term = *prev_term;
    for (size_t i = 0; i < entries.size(); ++i) {
      const Entry& e = entries[i];
      if (e.index() != first + i) {
        return absl::InvalidArgumentError(
            absl::StrCat("appended entries are not contiguous: entry ", i, " has index ", e.index(),
                         ", expected ", first + i));
      }
      if (e.term() == 0 || e.term() < term) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", e.index(), " has term ", e.term(),
                                                       " after term ", term,
                                                       ": terms must be >= 1 and never decrease"));
      }
      term = e.term();
      if (e.index() <= hard_state_.commit() && e.index() <= last_index_) {
        absl::StatusOr<uint64_t> stored = TermLocked(e.index());
        if (!stored.ok()) return stored.status();
        if (*stored != e.term()) {
          return absl::InvalidArgumentError(
              absl::StrCat("refusing to rewrite committed entry ", e.index(), " (term ", *stored,
                           " -> ", e.term(), "; commit is ", hard_state_.commit(), ")"));
        }
      }
    }
    new_last = entries.back().index();
  }
  if (hard_state.has_value()) {
    absl::Status s = ValidateHardState(*hard_state, new_last);
    if (!s.ok()) return s;
  }

  leveldb::WriteBatch& b = save_batch_;
  b.Clear();
  for (uint64_t i = new_last + 1; i <= last_index_; ++i) b.Delete(EntryKey(i));
  std::string key;
  std::string buf;
  for (const Entry& e : entries) {
    key.assign(1, kEntryPrefix);
    internal::PutBigEndian64(&key, e.index());
    buf.clear();
    e.AppendToString(&buf);
    b.Put(key, buf);
  }
  // Only a new term or vote must be durable (Raft's safety rests on them);
  // a commit index alone is learned again from the leader, or from the state
  // machine's applied index, after a restart. Writing it with every append
  // would also put the hard state key into every memtable, making every
  // flushed table overlap the others (see kFormatKey).
  const bool write_hard_state =
      hard_state.has_value() && (!has_hard_state_ || hard_state->term() != hard_state_.term() ||
                                 hard_state->vote() != hard_state_.vote());
  if (write_hard_state) {
    buf.clear();
    hard_state->AppendToString(&buf);
    b.Put(kHardStateKey, buf);
  }
  if (!entries.empty() || write_hard_state) {
    absl::Status s = Write(&b, entries.empty() ? "save hard state" : "append entries", sync);
    if (!s.ok()) return s;
  }

  if (!entries.empty()) {
    TruncateCacheFrom(entries.front().index());
    last_index_ = entries.back().index();
    for (Entry& e : entries) AppendToCache(std::move(e));
  }
  if (hard_state.has_value()) {
    hard_state_ = *hard_state;
    has_hard_state_ = true;
  }
  return absl::OkStatus();
}

absl::Status LogStore::Compact(uint64_t index, const ConfState& conf) {
  absl::MutexLock l(&mu_);
  if (index <= snapshot_.index()) return absl::OkStatus();
  if (index > last_index_) {
    return absl::InvalidArgumentError(
        absl::StrCat("compact to ", index, " beyond last index ", last_index_));
  }
  absl::StatusOr<uint64_t> term = TermLocked(index);
  if (!term.ok()) return term.status();
  SnapshotMetadata meta;
  meta.set_index(index);
  meta.set_term(*term);
  *meta.mutable_conf_state() = conf;
  leveldb::WriteBatch b;
  for (uint64_t i = snapshot_.index() + 1; i <= index; ++i) b.Delete(EntryKey(i));
  b.Put(kSnapshotKey, meta.SerializeAsString());
  absl::Status s = Write(&b, absl::StrCat("compact the log to ", index));
  if (!s.ok()) return s;
  CompactCacheTo(index);
  snapshot_ = std::move(meta);
  has_snapshot_ = true;
  return absl::OkStatus();
}

absl::Status LogStore::ApplySnapshot(const SnapshotMetadata& meta) {
  absl::MutexLock l(&mu_);
  if (meta.index() < snapshot_.index()) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot at index ", meta.index(),
                                                      " is older than the current snapshot at ",
                                                      snapshot_.index()));
  }
  if (has_hard_state_ && hard_state_.commit() > meta.index()) {
    // Keeping a commit beyond the snapshot would point past the new log end.
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot at index ", meta.index(), " is behind the committed index ", hard_state_.commit(),
        "; a follower installs only snapshots ahead of its commit"));
  }
  leveldb::WriteBatch b;
  for (uint64_t i = snapshot_.index() + 1; i <= last_index_; ++i) b.Delete(EntryKey(i));
  b.Put(kSnapshotKey, meta.SerializeAsString());
  absl::Status s = Write(&b, absl::StrCat("install snapshot at ", meta.index()));
  if (!s.ok()) return s;
  cache_.clear();
  cache_bytes_ = 0;
  term_runs_.clear();
  snapshot_ = meta;
  has_snapshot_ = true;
  last_index_ = meta.index();
  return absl::OkStatus();
}

absl::StatusOr<raft::InitialState> LogStore::GetInitialState() const {
  absl::MutexLock l(&mu_);
  return raft::InitialState{hard_state_, snapshot_.conf_state()};
}

absl::StatusOr<std::vector<Entry>> LogStore::Entries(uint64_t lo, uint64_t hi,
                                                     uint64_t max_bytes) const {
  absl::MutexLock l(&mu_);
  if (lo < snapshot_.index() + 1) return raft::LogCompactedError(lo);
  if (hi > last_index_ + 1) return raft::LogUnavailableError(hi - 1);
  if (lo > hi) {
    return absl::InvalidArgumentError(absl::StrCat("entries [", lo, ", ", hi, ") is not a range"));
  }
  std::vector<Entry> out;
  uint64_t bytes = 0;
  if (!cache_.empty() && lo >= cache_.front().index()) {
    for (uint64_t i = lo; i < hi; ++i) {
      const Entry& e = cache_[i - cache_.front().index()];
      bytes += e.ByteSizeLong();
      if (!out.empty() && bytes > max_bytes) break;
      out.push_back(e);
    }
    return out;
  }
  const internal::DbName name{"raft log store", dir_};
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(internal::VerifiedRead()));
  uint64_t want = lo;
  for (it->Seek(EntryKey(lo)); want < hi; it->Next(), ++want) {
    if (!it->status().ok() || !it->Valid() || !IsEntryKey(it->key()) ||
        internal::GetBigEndian64(it->key().data() + 1) != want) {
      if (!it->status().ok())
        return FromLevelDb(name, absl::StrCat("read entry ", want), it->status());
      return Corrupt(name, absl::StrCat("entry ", want, " is missing"));
    }
    Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) ||
        e.index() != want) {
      return Corrupt(name, absl::StrCat("entry ", want, " does not parse"));
    }
    bytes += e.ByteSizeLong();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<uint64_t> LogStore::TermLocked(uint64_t index) const {
  if (index < snapshot_.index()) return raft::LogCompactedError(index);
  if (index > last_index_) return raft::LogUnavailableError(index);
  if (index == snapshot_.index()) return snapshot_.term();
  // The last run starting at or before `index`.
  auto it = std::upper_bound(term_runs_.begin(), term_runs_.end(), index,
                             [](uint64_t i, const auto& run) { return i < run.first; });
  return std::prev(it)->second;
}

absl::StatusOr<uint64_t> LogStore::Term(uint64_t index) const {
  absl::MutexLock l(&mu_);
  return TermLocked(index);
}

uint64_t LogStore::FirstIndex() const {
  absl::MutexLock l(&mu_);
  return snapshot_.index() + 1;
}

uint64_t LogStore::LastIndex() const {
  absl::MutexLock l(&mu_);
  return last_index_;
}

SnapshotMetadata LogStore::Snapshot() const {
  absl::MutexLock l(&mu_);
  return snapshot_;
}

HardState LogStore::hard_state() const {
  absl::MutexLock l(&mu_);
  return hard_state_;
}

void LogStore::TruncateCacheFrom(uint64_t index) {
  while (!term_runs_.empty() && term_runs_.back().first >= index) term_runs_.pop_back();
  while (!cache_.empty() && cache_.back().index() >= index) {
    cache_bytes_ -= cache_.back().ByteSizeLong();
    cache_.pop_back();
  }
}

void LogStore::CompactCacheTo(uint64_t index) {
  const uint64_t first = index + 1;
  while (term_runs_.size() >= 2 && term_runs_[1].first <= first) {
    term_runs_.erase(term_runs_.begin());
  }
  if (!term_runs_.empty() && term_runs_[0].first < first) term_runs_[0].first = first;
  if (first > last_index_) term_runs_.clear();
  while (!cache_.empty() && cache_.front().index() <= index) {
    cache_bytes_ -= cache_.front().ByteSizeLong();
    cache_.pop_front();
  }
}

void LogStore::AppendToCache(Entry e) {
  if (term_runs_.empty() || term_runs_.back().second != e.term()) {
    term_runs_.emplace_back(e.index(), e.term());
  }
  if (options_.entry_cache_bytes == 0) return;
  cache_bytes_ += e.ByteSizeLong();
  cache_.push_back(std::move(e));
  // Keep at least the newest entry so the cache stays anchored at the end.
  while (cache_.size() > 1 && cache_bytes_ > options_.entry_cache_bytes) {
    cache_bytes_ -= cache_.front().ByteSizeLong();
    cache_.pop_front();
  }
}

}  // namespace raftkv::storage
