// StateMachine: the replicated key-value data of one node, on LevelDB.
//
// Owns a second LevelDB database (separate from the log) holding:
//   "k" + user key               KeyValue (without its key): value, create and
//                                mod revision, version
//   "m:format"                   format tag ("raftkv-sm-1")
//   "m:state"                    applied index, applied term, revision
//                                (3 x 8 big-endian bytes)
//   "s" + client id (8 BE bytes) client session: last sequence, the log index
//                                that last touched it, and its CommandResult
//   "x" + index + client id      expiry index over sessions, by that index
// Each Apply() writes its data changes, sessions and the new applied index
// and revision in ONE WriteBatch, so after a crash the database reflects a
// whole number of Apply() calls and the log is replayed from applied + 1.
// Apply writes are not synced (the Raft log is the durable record); Sync()
// makes them durable and must precede compacting the log.
//
// On disk, `dir` holds a file ACTIVE naming the live database directory
// (dir/db-NNNNNN). A snapshot import builds a fresh database next to it and
// switches ACTIVE by an atomic rename, so a crash leaves either the old or the
// new database, never a mix; leftovers are removed at Open.
//
// Determinism: Apply's outcome depends only on the entries and the options'
// session_expiry_entries (which must be equal on all nodes), never on how the
// entries are split into Apply calls, on wall time or on size limits (those
// are checked by Validate() before proposing, so nodes with different limits
// cannot diverge).
//
// CPU: every write needs its key's previous row (version and create_revision;
// the old value only for prev_kv). A row cache of recently written keys
// (row_cache.h), used only by the apply thread and kept equal to the
// database, answers most of those lookups
// without LevelDB; a filter of every stored key (key_filter.h) answers those
// of keys never stored, which LevelDB finds absent only after walking both
// memtables and probing every level; a block cache of its own (blocks
// checksummed when read from a file, never re-verified from memory) serves
// the rest and the readers.
//
// Thread safety: Get, Range, ExportSnapshot, applied_index, revision may be
// called from any thread, concurrently with everything. Apply, Sync and
// FinishImport must be called from one thread at a time (the apply thread).
// A SnapshotImport is used by one thread at a time, any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "leveldb/cache.h"
#include "leveldb/db.h"
#include "leveldb/env.h"
#include "leveldb/write_batch.h"
#include "raft/log_storage.h"
#include "storage/key_filter.h"
#include "storage/row_cache.h"
#include "raftkv/v1/state_machine.pb.h"

namespace raftkv::storage {

struct StateMachineOptions {
  // Limits enforced by Validate() (before proposing), not by Apply().
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = 1 << 20;
  // A client session not touched by any of its commands for this many log
  // entries is forgotten; a retry after that is applied again. 10M entries is
  // minutes at the target load and hours at typical loads. MUST be the same on
  // every node of a cluster.
  uint64_t session_expiry_entries = 10'000'000;
  // Bytes per snapshot chunk (a chunk always holds at least one record).
  size_t snapshot_chunk_bytes = 1 << 20;
  // Read every record once at Open, so that a damaged table is found at
  // start-up rather than when a client reads it.
  bool verify_on_open = true;
  // LevelDB memtable size (LevelDB's default is 4 MiB).
  size_t write_buffer_size = 16 << 20;
  // LevelDB block cache of this state machine (shared by its live database
  // and a snapshot being imported). Every put reads the key's previous value;
  // a block found here costs no read, checksum, decompression or allocation,
  // so size it to hold the hot key space. Blocks are checksummed whenever
  // they are read from a file. 0 = LevelDB's default (8 MiB per database).
  size_t block_cache_bytes = 64 << 20;
  // Bytes of recently written keys (value and revisions) that Apply keeps in
  // memory, so that a write to one finds its previous value without a LevelDB
  // lookup (a walk of the memtable and every level). Only the apply thread
  // uses it. 0 turns it off.
  size_t row_cache_bytes = 64 << 20;
  // Most memory the filter of stored keys (key_filter.h) may take: about 1.2
  // bytes per key. It lets a write to a key never stored skip the LevelDB
  // lookup of its previous value. A key space too big for it turns the
  // filter off (every such write looks up LevelDB, as with 0). Built from the
  // database at Open and after a snapshot import: a scan of every key.
  size_t key_filter_bytes = 64 << 20;
  // Snappy-compress table blocks (LevelDB stores a block raw when snappy
  // saves under 1/8 of it). On by default: with compressible values (the
  // benchmark's), compaction moves a fraction of the bytes and costs half
  // the CPU of uncompressed tables (storage_bench ApplyPut under callgrind);
  // turn it off only for values known to be incompressible.
  bool compress = true;
  // LevelDB environment; nullptr = leveldb::Env::Default().
  leveldb::Env* env = nullptr;
};

class StateMachine;

// A point-in-time export of the state machine, as a stream of chunks that
// StateMachine::BeginImport() rebuilds from. Holds a LevelDB snapshot, so the
// state machine keeps applying meanwhile. Use from one thread at a time.
// REQUIRES: destroyed before its StateMachine (and before FinishImport on it,
// which refuses to run while exports are alive).
class SnapshotReader {
 public:
  ~SnapshotReader();
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;

  // The applied index / term / revision the export reflects (for
  // SnapshotMetadata).
  uint64_t applied_index() const { return applied_index_; }
  uint64_t applied_term() const { return applied_term_; }
  int64_t revision() const { return revision_; }

  // The next chunk, or nullopt after the last one.
  absl::StatusOr<std::optional<std::string>> Next();

 private:
  friend class StateMachine;
  SnapshotReader(StateMachine* owner, leveldb::DB* db, const leveldb::Snapshot* snap,
                 size_t chunk_bytes);

  StateMachine* const owner_;
  leveldb::DB* const db_;
  const leveldb::Snapshot* const snapshot_;
  const size_t chunk_bytes_;
  std::unique_ptr<leveldb::Iterator> it_;
  uint64_t applied_index_ = 0;
  uint64_t applied_term_ = 0;
  int64_t revision_ = 0;
  uint64_t chunks_ = 0;
  uint64_t records_ = 0;
  bool done_ = false;
};

// A snapshot being imported into a fresh database beside the live one.
// Feed it every chunk in order, then hand it to StateMachine::FinishImport().
// Destroying it unfinished removes the partial database.
// REQUIRES: destroyed (or finished) before its StateMachine.
class SnapshotImport {
 public:
  ~SnapshotImport();
  SnapshotImport(const SnapshotImport&) = delete;
  SnapshotImport& operator=(const SnapshotImport&) = delete;

  // Writes one chunk. InvalidArgument for a malformed, out-of-order or
  // superfluous chunk (the import is then unusable).
  absl::Status Write(std::string_view chunk);
  bool done() const { return done_; }

 private:
  friend class StateMachine;
  SnapshotImport(StateMachine* owner, std::string dir, std::string name,
                 std::unique_ptr<leveldb::DB> db);

  StateMachine* const owner_;
  const std::string parent_dir_;
  const std::string name_;  // db directory name inside parent_dir_
  std::unique_ptr<leveldb::DB> db_;
  uint64_t next_chunk_ = 0;
  uint64_t records_ = 0;
  bool done_ = false;
  bool failed_ = false;
  bool has_meta_ = false;
  bool committed_ = false;
};

class StateMachine {
 public:
  // Opens or creates the state machine under `dir`. Fails with a message
  // naming the directory, the damaged file where LevelDB reports one, and what
  // to do, if the database is corrupt, unreadable or in use.
  static absl::StatusOr<std::unique_ptr<StateMachine>> Open(const std::string& dir,
                                                            const StateMachineOptions& options);
  ~StateMachine();
  StateMachine(const StateMachine&) = delete;
  StateMachine& operator=(const StateMachine&) = delete;

  uint64_t applied_index() const;
  uint64_t applied_term() const;
  int64_t revision() const;
  // Keys added to the filter of stored keys since it was last built (what
  // it is sized by): each key once, at its creation. Apply thread only.
  uint64_t key_filter_adds() const { return keys_.adds(); }

  // Checks a command before it is proposed: an operation is set, the key is
  // non-empty and within max_key_bytes, values within max_value_bytes, a
  // compare-and-swap says what to compare, and a command with a client id has
  // a sequence >= 1. InvalidArgument with the reason otherwise.
  absl::Status Validate(const v1::Command& cmd) const;

  // Applies committed entries in log order. Entries with index <=
  // applied_index() are skipped (replay after a restart is idempotent); the
  // first new one must be applied_index() + 1 (FailedPrecondition otherwise,
  // nothing changed). ENTRY_NOOP and ENTRY_CONF_CHANGE entries only advance the
  // applied index. A normal entry whose data is not a well-formed Command gets
  // an INVALID result and changes nothing but the applied index.
  // Returns one CommandResult per entry passed: a default one for skipped,
  // noop and conf-change entries.
  // Exactly-once: a command whose (client_id, sequence) equals its live
  // session's last sequence returns the recorded result; a lower sequence gets
  // INVALID; neither changes anything.
  // Every result of a write to an existing key carries the key's previous
  // value (prev_kv).
  absl::StatusOr<std::vector<v1::CommandResult>> Apply(const std::vector<raft::Entry>& entries);
  // As above, but the result of a put or delete at index i carries prev_kv
  // only if wants_prev_kv(i) or the command has a client session (whose
  // stored result must be the same on every node); a compare-and-swap's
  // always does. Only the node answering a client who asked for it needs the
  // old value: copying it is a cold read of the whole value on every node,
  // and a follower answers no one.
  absl::StatusOr<std::vector<v1::CommandResult>> Apply(
      const std::vector<raft::Entry>& entries, absl::FunctionRef<bool(uint64_t)> wants_prev_kv);

  // Makes everything applied so far durable. Call before compacting the log.
  absl::Status Sync();

  // The key, or nullopt if absent.
  absl::StatusOr<std::optional<v1::KeyValue>> Get(std::string_view key) const;

  struct RangeResult {
    std::vector<v1::KeyValue> kvs;
    bool more = false;  // keys beyond `limit` remain in the range
  };
  // Keys in [start, end) in key order; end empty = to the end of the
  // keyspace; limit 0 = no limit. InvalidArgument if end is non-empty and
  // below start.
  absl::StatusOr<RangeResult> Range(std::string_view start, std::string_view end,
                                    size_t limit) const;
  // Keys starting with `prefix` (all keys if empty).
  absl::StatusOr<RangeResult> RangePrefix(std::string_view prefix, size_t limit) const;

  // A point-in-time export of the whole state machine.
  absl::StatusOr<std::unique_ptr<SnapshotReader>> ExportSnapshot();

  // Starts importing a snapshot into a fresh database beside the live one.
  // FailedPrecondition while another import is alive (one at a time).
  absl::StatusOr<std::unique_ptr<SnapshotImport>> BeginImport();
  // Atomically replaces the live database by the imported one once every
  // chunk was written; afterwards applied_index() etc. are the snapshot's.
  // FailedPrecondition if the import is incomplete or exports are alive; the
  // live database is then unchanged. (Only if fsyncing the directory fails
  // after ACTIVE was switched does it return an error with the new database
  // live; applied_index() always tells which one is.)
  absl::Status FinishImport(std::unique_ptr<SnapshotImport> import);

  const std::string& dir() const { return dir_; }

 private:
  friend class SnapshotReader;
  friend class SnapshotImport;
  // A client's session as of this call's pending writes or the database. A
  // stored result stays serialized until a retry needs it: most commands only
  // compare sequences.
  struct SessionRef {
    uint64_t sequence = 0;
    uint64_t last_index = 0;
    bool pending = false;     // recorded by this call: its result is results[result_index]
    size_t result_index = 0;
    std::string_view stored;  // else the serialized result, in Pending::session_value
  };
  // A key written by this Apply call. `value` points into the call's parsed
  // commands (and is moved into the row cache once written); nullptr = deleted.
  struct PendingKv {
    std::string* value = nullptr;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
    int64_t version = 0;
  };
  // A session recorded by this Apply call; its result is results[result].
  struct PendingSession {
    uint64_t sequence = 0;
    uint64_t last_index = 0;
    size_t result = 0;
  };
  // A key as it was before the current command; value == nullptr: absent.
  // `value` points into the call's pending writes, the row cache or
  // Pending::db_kv: valid until the next LoadPrev or the row cache's update
  // after the call's write.
  struct Prev {
    const std::string* value = nullptr;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
    int64_t version = 0;
  };
  // Writes of one Apply() call, read back by later entries of the same call,
  // and scratch buffers reused across its entries.
  struct Pending {
    // Keys point into the call's parsed commands.
    absl::flat_hash_map<std::string_view, PendingKv> kvs;
    absl::flat_hash_map<uint64_t, PendingSession> sessions;
    absl::flat_hash_map<uint64_t, uint64_t> old_session_index;  // client -> last_index on disk
    int64_t revision = 0;
    std::string db_key;
    std::string db_value;
    v1::KeyValue db_kv;  // a previous value read from the database
    std::string session_value;
  };

  StateMachine(std::string dir, const StateMachineOptions& options);
  absl::Status OpenActive();
  absl::Status LoadState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The key as it was before the current command.
  absl::Status LoadPrev(std::string_view key, Pending& p, Prev* prev) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The client's session (live or expired), or nullopt if it has none. A
  // stored one's result views p.session_value, valid until the next lookup.
  absl::StatusOr<std::optional<SessionRef>> LookupSession(uint64_t client_id, Pending& p) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Applies one well-formed-or-not command, filling *r (with prev_kv if the
  // key existed and `want_prev` or the command is a compare-and-swap).
  absl::Status ApplyCommand(v1::Command& cmd, bool want_prev, Pending& p,
                            v1::CommandResult* r) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Adds deletions of sessions dead for every entry after `applied` to
  // `batch`, which records sessions at indexes >= first_new; *resume is where
  // the next scan may start once it is written.
  absl::Status ExpireSessions(uint64_t applied, uint64_t first_new, Pending& p,
                              leveldb::WriteBatch* batch, uint64_t* resume) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Clears keys_ and adds every user key of the database to it.
  absl::Status BuildKeyFilter() ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void ReleaseReader();
  void EndImport();
  std::string DbDir() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string dir_;
  const StateMachineOptions options_;
  // These two outlive every database that uses them (declared before db_).
  // Null when options_.block_cache_bytes is 0.
  const std::unique_ptr<leveldb::Cache> block_cache_;
  // options_.env (or the default), with table reads made cachable.
  const std::unique_ptr<leveldb::Env> env_;

  mutable absl::Mutex mu_;
  // Swapped only by FinishImport (exclusive lock); used under a shared lock.
  std::unique_ptr<leveldb::DB> db_ ABSL_GUARDED_BY(mu_);
  std::string db_name_ ABSL_GUARDED_BY(mu_);  // "db-NNNNNN"
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t applied_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t applied_term_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  int live_readers_ ABSL_GUARDED_BY(mu_) = 0;
  bool importing_ ABSL_GUARDED_BY(mu_) = false;

  // Owned by the apply thread (Apply, FinishImport). Every expiry-index key
  // below this log index is deleted, so the expiry scan starts here instead
  // of wading through the tombstones of every session ever touched.
  uint64_t expiry_scan_from_ = 0;
  // Owned by the apply thread: reused by Apply so that its buffer keeps the
  // capacity of earlier batches.
  leveldb::WriteBatch apply_batch_;
  // Owned by the apply thread: user key -> row (row_cache.h), exactly
  // as in the live database: updated after each Apply's write, replaced by
  // FinishImport. Null when options_.row_cache_bytes is 0.
  std::unique_ptr<RowCache> rows_;
  // Owned by the apply thread: every user key stored in the live database
  // was added (built by BuildKeyFilter at Open and FinishImport, and by Apply
  // after each write), so a key it does not contain is absent.
  KeyFilter keys_;
};

}  // namespace raftkv::storage
