// Histogram: a log-bucketed latency histogram in the manner of HdrHistogram,
// with three significant decimal digits over the whole range.
//
// Values are non-negative integers (the bench records nanoseconds). Values
// below 2048 each have their own bucket; above that, every power-of-two range
// [2^k, 2^(k+1)) is cut into 1024 equal buckets, so a bucket is never wider
// than 1/1024 of the values it holds: any reported percentile is within 0.1%
// of the true sample (it reports the bucket's highest value, capped at the
// recorded maximum). Values at or above kMaxTrackable (2^40, about 18 minutes
// in nanoseconds) are clamped into the last bucket; count, min, max and the
// sum (hence the mean) stay exact for every value.
//
// Memory is fixed (about 250 KiB) and Record() is O(1) with no allocation.
// Not thread-safe: one writer at a time; callers that record from several
// threads hold their own lock or keep one histogram per thread and Merge().
#pragma once

#include <cstdint>
#include <vector>

namespace raftkv::bench {

class Histogram {
 public:
  static constexpr uint64_t kMaxTrackable = uint64_t{1} << 40;

  Histogram();

  void Record(uint64_t value);
  // Adds every sample of `other` to this histogram.
  void Merge(const Histogram& other);
  void Reset();

  uint64_t count() const { return count_; }
  // 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  // Exact arithmetic mean of the recorded values; 0 when empty.
  double Mean() const;
  // The smallest bucket value v such that at least `percentile`% of the
  // samples are <= v (reported as the bucket's highest value, capped at
  // max()). percentile is clamped to [0, 100]; 0 when empty.
  uint64_t ValueAtPercentile(double percentile) const;

  // Bucket layout, exposed for tests: the index of a value's bucket and the
  // lowest and highest value that bucket holds.
  static int BucketIndex(uint64_t value);
  static uint64_t BucketLowest(int index);
  static uint64_t BucketHighest(int index);
  static int BucketCount();

 private:
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  // Sum of the values; long double keeps the mean exact enough for any count
  // a bench can record.
  long double sum_ = 0;
};

}  // namespace raftkv::bench
