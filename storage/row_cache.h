// RowCache: the rows (value and revisions) of recently written user keys, so
// that a write to one finds its previous row without a LevelDB lookup.
//
// What it replaces, LevelDB's LRU cache, is built for many threads: every
// lookup and release takes a shard's mutex and moves the entry between two
// linked lists, touching its neighbours, and every insert allocates a handle.
// Under 1,000 clients' puts that bookkeeping took about 8% of a follower's
// CPU (perf, docs/benchmarks.md), more than the lookup itself. Here a lookup
// is one probe of a flat hash table.
//
// Eviction is by write order (the row written longest ago goes first), which
// for a cache of previous rows is least-recently-used: a key's row is looked
// up only to be written again. Rewriting a key appends it to the order anew;
// the stale mention is skipped when it comes up, and the order is compacted
// whenever stale mentions outnumber the live ones.
//
// Thread safety: none; one owner at a time (the state machine's apply
// thread). A pointer Find() returns is valid until the next Put, Erase or
// Clear.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"

namespace raftkv::storage {

class RowCache {
 public:
  struct Row {
    std::string value;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
    int64_t version = 0;
  };

  // Holds rows while their charge (Charge()) stays within `budget_bytes`.
  explicit RowCache(size_t budget_bytes) : budget_(budget_bytes) {}
  RowCache(const RowCache&) = delete;
  RowCache& operator=(const RowCache&) = delete;

  // The key's row, or null when not cached.
  const Row* Find(std::string_view key) const;
  // Caches `row` as the key's (replacing any), then evicts the rows written
  // longest ago until the budget holds. A row bigger than the budget alone
  // is not cached (and the key's old row is dropped).
  void Put(std::string_view key, Row row);
  void Erase(std::string_view key);
  void Clear();

  size_t size() const { return rows_.size(); }
  size_t bytes() const { return bytes_; }
  // The memory a row is counted as: its strings, the table's slot and its
  // mention in the write order.
  static size_t Charge(std::string_view key, const Row& row);

 private:
  struct Entry {
    Row row;
    uint64_t stamp = 0;  // the Put that wrote it; its mention in order_ has the same
    size_t charge = 0;
  };
  struct Mention {
    std::string key;
    uint64_t stamp;
  };
  // Drops the mentions of rows since rewritten or erased, keeping the order.
  void CompactOrder();

  const size_t budget_;
  absl::flat_hash_map<std::string, Entry> rows_;
  std::deque<Mention> order_;  // oldest write first; some mentions are stale
  size_t bytes_ = 0;
  uint64_t next_stamp_ = 1;
};

}  // namespace raftkv::storage
