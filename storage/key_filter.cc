#include "storage/key_filter.h"

#include <bloom.h>

#include <limits>

namespace raftkv::storage {

struct KeyFilter::Layer {
  struct bloom bloom {};
  int capacity = 0;
  ~Layer() { bloom_free(&bloom); }
};

KeyFilter::KeyFilter(size_t max_bytes) : max_bytes_(max_bytes) { Clear(); }

KeyFilter::~KeyFilter() = default;

bool KeyFilter::MayContain(std::string_view key) const {
  if (!enabled_) return true;
  for (const auto& layer : layers_) {
    // libbloom takes a non-const filter but only reads it here.
    if (bloom_check(&layer->bloom, key.data(), static_cast<int>(key.size())) == 1) return true;
  }
  return false;
}

void KeyFilter::Add(std::string_view key) {
  if (!enabled_) return;
  if (added_to_newest_ == layers_.back()->capacity) {
    const int capacity = layers_.back()->capacity;
    Grow(capacity > std::numeric_limits<int>::max() / 2 ? capacity : capacity * 2);
    if (!enabled_) return;
  }
  bloom_add(&layers_.back()->bloom, key.data(), static_cast<int>(key.size()));
  ++added_to_newest_;
}

uint64_t KeyFilter::adds() const {
  if (layers_.empty()) return 0;
  uint64_t full = 0;
  for (size_t i = 0; i + 1 < layers_.size(); ++i) full += layers_[i]->capacity;
  return full + added_to_newest_;
}

void KeyFilter::Clear() {
  layers_.clear();
  bytes_ = 0;
  enabled_ = true;
  Grow(kFirstLayerKeys);
}

void KeyFilter::Grow(int keys) {
  auto layer = std::make_unique<Layer>();
  // libbloom sizes the bit array for `keys` at the error rate; its size is
  // only known once made, so a layer over budget is made and dropped.
  if (bloom_init(&layer->bloom, keys, kErrorRate) != 0 ||
      bytes_ + static_cast<size_t>(layer->bloom.bytes) > max_bytes_) {
    Disable();
    return;
  }
  layer->capacity = keys;
  bytes_ += static_cast<size_t>(layer->bloom.bytes);
  layers_.push_back(std::move(layer));
  added_to_newest_ = 0;
}

void KeyFilter::Disable() {
  layers_.clear();
  bytes_ = 0;
  enabled_ = false;
}

}  // namespace raftkv::storage
