// Internal helpers shared by LogStore and StateMachine: key encoding, LevelDB
// options, and the translation of LevelDB errors into absl::Status messages
// that name the directory and say what an operator should do.
//
// Stateless functions; safe from any thread. Not part of the public API of
// storage/ (service/ should not include this header).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "leveldb/db.h"
#include "leveldb/options.h"

namespace raftkv::storage::internal {

// Appends `v` as 8 big-endian bytes, so that byte order equals numeric order.
void PutBigEndian64(std::string* dst, uint64_t v);
// Reads 8 big-endian bytes at `p`. REQUIRES: at least 8 readable bytes.
uint64_t GetBigEndian64(const char* p);
void PutBigEndian32(std::string* dst, uint32_t v);
uint32_t GetBigEndian32(const char* p);

// The smallest key greater than every key starting with `prefix`, or "" when
// there is none (prefix empty or all 0xff bytes: scan to the end).
std::string PrefixSuccessor(std::string_view prefix);

// Which database an error is about, for messages ("raft log store", ...).
struct DbName {
  const char* kind;
  std::string dir;
};

// Converts a non-OK LevelDB status into an absl::Status naming the database
// and, for corruption or I/O trouble, what an operator should do. `what` says
// which operation failed ("open", "read log entry 17", ...). An OK status
// gives OK, but its arguments are built first (DbName copies a path): on a
// path taken for every write, test s.ok() before calling it (LogStore::Write,
// StateMachine::Apply).
absl::Status FromLevelDb(const DbName& db, absl::string_view what, const leveldb::Status& s);

// A DataLoss error for damage that LevelDB itself did not notice (a record
// that fails to parse, a gap in the log). Same operator advice as above.
absl::Status Corrupt(const DbName& db, absl::string_view detail);

// Opens (creating if missing) a LevelDB database in `dir` with checksums and
// paranoid checks on. Refuses a directory that holds LevelDB files but no
// CURRENT file: LevelDB would silently start a new, empty database there.
absl::Status OpenDb(const DbName& db, const leveldb::Options& options,
                    std::unique_ptr<leveldb::DB>* out);

// Read options used everywhere: checksums verified on every read.
leveldb::ReadOptions VerifiedRead();

// An Env that returns table reads in LevelDB's own buffer rather than as a
// pointer into an mmap'd file. LevelDB never caches blocks it got from an
// mmap'd file and re-verifies their checksum on every read; an uncompressed
// block read through this Env enters the block cache instead, and is
// checksummed once, when it is read from the file. Everything else is passed
// to `base`, which must outlive the returned Env.
std::unique_ptr<leveldb::Env> NewCachingReadEnv(leveldb::Env* base);

// An Env whose new LevelDB write-ahead logs (*.log) get `bytes` allocated up
// front (posix_fallocate: the file size becomes `bytes`, the tail reads as
// zeros). A synced append into allocated space leaves the file size alone, so
// fdatasync has no size change to commit: on the VM it was measured on,
// 50-58 us instead of 82-85 us for a 300-byte append. LevelDB's log reader
// skips the zero tail (zero-type records are how its own preallocating
// writer left files), and the log is written from offset 0 as before. Best
// effort: where the file system cannot allocate, logs grow as they would
// without this Env. Files are created and written by `base` (which must
// outlive the returned Env), so wrappers that count syncs or drop unsynced
// data keep working.
std::unique_ptr<leveldb::Env> NewPreallocatingLogEnv(leveldb::Env* base, uint64_t bytes);

// What RepairTornLogTail() did to one write-ahead log.
struct TornTailRepair {
  std::string file;
  uint64_t truncated_at = 0;  // new size: the end of the last whole record
  uint64_t old_size = 0;
};

// Cuts a torn last write off the LevelDB write-ahead logs (*.log) in `dir`,
// which must run before LevelDB opens the directory. A preallocated log
// (NewPreallocatingLogEnv) reads as zeros past its last record, so a write
// that a crash cut short at a page boundary leaves a record whose header
// survived and whose tail reads as zeros, instead of ending the file early:
// LevelDB, with paranoid checks, would call that corruption and refuse to
// open. Such a write never returned, so no fsync covered it and nothing it
// held was acknowledged.
//
// Each log is walked the way LevelDB reads it (32 KiB blocks; records with a
// masked CRC32C of type and payload; FIRST/MIDDLE/LAST fragments). It is cut
// back to the end of its last whole record only when the walk, before it
// meets any unwritten (zero) space, stops at a record whose CRC fails (or
// whose header is malformed), or at zeros in the middle of a fragmented
// record, AND everything from inside that record to the end of the file is
// zeros: the shape of a torn write, and nothing else. Damage followed by
// non-zero data, non-zero data after unwritten space, or a record whose CRC
// fails although its tail is not zero (a flipped bit), is left for LevelDB
// to report.
// Files are listed and read through `env`, the Env the database will be
// opened with. Returns the logs it cut (usually none).
absl::StatusOr<std::vector<TornTailRepair>> RepairTornLogTail(leveldb::Env* env,
                                                              const std::string& dir);

// fsyncs a directory so that a rename or a new file in it is durable.
absl::Status SyncDir(const std::string& dir);

}  // namespace raftkv::storage::internal
