#include "storage/row_cache.h"

#include <utility>

#include "absl/strings/string_view.h"

namespace raftkv::storage {
namespace {

// The table's transparent lookup takes absl::string_view, which this Abseil
// build does not alias to std::string_view.
absl::string_view Ref(std::string_view key) { return absl::string_view(key.data(), key.size()); }

}  // namespace

size_t RowCache::Charge(std::string_view key, const Row& row) {
  // The key is held twice (table and order); short strings live inline.
  const size_t key_heap = key.size() > 15 ? 2 * (key.size() + 1) : 0;
  const size_t value_heap = row.value.capacity() > 15 ? row.value.capacity() + 1 : 0;
  return sizeof(std::string) + sizeof(Entry) + 1 + sizeof(Mention) + key_heap + value_heap;
}

const RowCache::Row* RowCache::Find(std::string_view key) const {
  auto it = rows_.find(Ref(key));
  return it == rows_.end() ? nullptr : &it->second.row;
}

void RowCache::Put(std::string_view key, Row row) {
  const size_t charge = Charge(key, row);
  if (charge > budget_) {
    Erase(key);
    return;
  }
  const uint64_t stamp = next_stamp_++;
  auto [it, inserted] = rows_.try_emplace(Ref(key));
  Entry& e = it->second;
  if (!inserted) bytes_ -= e.charge;
  e.row = std::move(row);
  e.stamp = stamp;
  e.charge = charge;
  bytes_ += charge;
  order_.push_back(Mention{std::string(key), stamp});
  while (bytes_ > budget_ && !order_.empty()) {
    Mention& oldest = order_.front();
    auto victim = rows_.find(oldest.key);
    if (victim != rows_.end() && victim->second.stamp == oldest.stamp) {
      bytes_ -= victim->second.charge;
      rows_.erase(victim);
    }
    order_.pop_front();
  }
  // Each compaction halves the order at least, so its cost is spread over
  // as many Puts as it keeps mentions.
  if (order_.size() > 2 * rows_.size() + 1024) CompactOrder();
}

void RowCache::Erase(std::string_view key) {
  auto it = rows_.find(Ref(key));
  if (it == rows_.end()) return;
  bytes_ -= it->second.charge;
  rows_.erase(it);
}

void RowCache::Clear() {
  rows_.clear();
  order_.clear();
  bytes_ = 0;
}

void RowCache::CompactOrder() {
  std::deque<Mention> live;
  for (Mention& m : order_) {
    auto it = rows_.find(m.key);
    if (it != rows_.end() && it->second.stamp == m.stamp) live.push_back(std::move(m));
  }
  order_.swap(live);
}

}  // namespace raftkv::storage
