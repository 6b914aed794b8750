#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace raftkv::bench {
namespace {

// 2^kSubBits buckets per power of two: 1024 gives < 0.1% relative width,
// i.e. three significant decimal digits.
constexpr int kSubBits = 10;
constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;  // 1024
// Values below 2 * kSubCount are exact: one bucket each.
constexpr uint64_t kLinearLimit = 2 * kSubCount;  // 2048

}  // namespace

int Histogram::BucketIndex(uint64_t value) {
  value = std::min(value, kMaxTrackable - 1);
  if (value < kLinearLimit) return static_cast<int>(value);
  // shift >= 1: value >> shift lies in [kSubCount, 2 * kSubCount).
  const int shift = std::bit_width(value) - (kSubBits + 1);
  const uint64_t sub = (value >> shift) - kSubCount;
  return static_cast<int>(kLinearLimit + (shift - 1) * kSubCount + sub);
}

uint64_t Histogram::BucketLowest(int index) {
  const auto i = static_cast<uint64_t>(index);
  if (i < kLinearLimit) return i;
  const uint64_t shift = (i - kLinearLimit) / kSubCount + 1;
  const uint64_t sub = (i - kLinearLimit) % kSubCount;
  return (kSubCount + sub) << shift;
}

uint64_t Histogram::BucketHighest(int index) {
  const auto i = static_cast<uint64_t>(index);
  if (i < kLinearLimit) return i;
  const uint64_t shift = (i - kLinearLimit) / kSubCount + 1;
  return BucketLowest(index) + (uint64_t{1} << shift) - 1;
}

int Histogram::BucketCount() { return BucketIndex(kMaxTrackable - 1) + 1; }

Histogram::Histogram() : buckets_(BucketCount(), 0) {}

void Histogram::Record(uint64_t value) {
  ++buckets_[BucketIndex(value)];
  if (count_ == 0 || value < min_) min_ = value;
  max_ = std::max(max_, value);
  ++count_;
  sum_ += static_cast<long double>(value);
}

void Histogram::Merge(const Histogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void Histogram::Reset() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  min_ = 0;
  max_ = 0;
  sum_ = 0;
}

double Histogram::Mean() const {
  if (count_ == 0) return 0;
  return static_cast<double>(sum_ / static_cast<long double>(count_));
}

uint64_t Histogram::ValueAtPercentile(double percentile) const {
  if (count_ == 0) return 0;
  percentile = std::clamp(percentile, 0.0, 100.0);
  // The rank of the sample we want, 1-based: at least 1, at most count_.
  // The relative epsilon keeps 99.9% of 1000 at rank 999, not 1000, despite
  // the rounding of 99.9 / 100.
  auto rank = static_cast<uint64_t>(
      std::ceil(percentile / 100.0 * static_cast<double>(count_) * (1 - 1e-12)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      return std::clamp(BucketHighest(static_cast<int>(i)), min(), max_);
    }
  }
  return max_;
}

}  // namespace raftkv::bench
