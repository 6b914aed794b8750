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

#include "absl/status/status.h"
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
// which operation failed ("open", "read log entry 17", ...).
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

// fsyncs a directory so that a rename or a new file in it is durable.
absl::Status SyncDir(const std::string& dir);

}  // namespace raftkv::storage::internal
