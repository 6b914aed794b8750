// KeyFilter: which user keys the state machine may hold, as Bloom filters
// (libbloom), so that a write to a key it has never stored does not look the
// key up in LevelDB. Such a lookup finds nothing only after walking both
// memtables and probing every level; with 1,000 clients putting fresh keys
// it took a tenth of the cluster's CPU.
//
// False means the key was never added since the last Clear(); true means it
// may have been (about 1% of absent keys per filter layer). The filter grows
// by adding a layer of twice the capacity when the newest one is full. A
// filter that would need more than `max_bytes` disables itself: from then on
// MayContain() is always true and Add() costs nothing, until Clear().
//
// Keys are never removed (Bloom filters cannot forget); a deleted key reads
// as "may contain" until the filter is rebuilt, which costs one lookup.
//
// Thread safety: none; one owner at a time (the state machine's apply
// thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace raftkv::storage {

class KeyFilter {
 public:
  // `max_bytes` 0 makes a filter that is always disabled.
  explicit KeyFilter(size_t max_bytes);
  ~KeyFilter();
  KeyFilter(const KeyFilter&) = delete;
  KeyFilter& operator=(const KeyFilter&) = delete;

  bool MayContain(std::string_view key) const;
  void Add(std::string_view key);
  // Empties the filter (and re-enables it if the budget allows any layer).
  void Clear();
  // Turns the filter off (MayContain always true) until Clear().
  void Disable();

  bool enabled() const { return enabled_; }
  size_t bytes() const { return bytes_; }
  size_t layers() const { return layers_.size(); }
  // Add() calls the layers hold since the last Clear() (every layer but the
  // newest is full): what they fill up with, so a key added twice counts
  // twice. 0 while disabled.
  uint64_t adds() const;

  // Capacity of the first layer; each later one doubles it.
  static constexpr int kFirstLayerKeys = 1 << 20;
  // False-positive rate each layer is sized for.
  static constexpr double kErrorRate = 0.01;

 private:
  struct Layer;
  // Adds a layer of `keys` capacity, or disables the filter if the budget
  // does not allow it.
  void Grow(int keys);

  const size_t max_bytes_;
  std::vector<std::unique_ptr<Layer>> layers_;
  size_t bytes_ = 0;
  int added_to_newest_ = 0;
  bool enabled_ = false;
};

}  // namespace raftkv::storage
