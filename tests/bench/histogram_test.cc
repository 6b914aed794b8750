// Histogram: bucket layout, percentile precision against an exact oracle,
// merging, clamping.
#include "bench/histogram.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace raftkv::bench {
namespace {

TEST(HistogramTest, EmptyReportsZeros) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.Mean(), 0.0);
  EXPECT_EQ(h.ValueAtPercentile(50), 0u);
  EXPECT_EQ(h.ValueAtPercentile(100), 0u);
}

TEST(HistogramTest, SmallValuesAreExact) {
  Histogram h;
  for (uint64_t v = 1; v <= 1000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 1000u);
  EXPECT_DOUBLE_EQ(h.Mean(), 500.5);
  EXPECT_EQ(h.ValueAtPercentile(0), 1u);
  EXPECT_EQ(h.ValueAtPercentile(50), 500u);
  EXPECT_EQ(h.ValueAtPercentile(90), 900u);
  EXPECT_EQ(h.ValueAtPercentile(99), 990u);
  EXPECT_EQ(h.ValueAtPercentile(99.9), 999u);
  EXPECT_EQ(h.ValueAtPercentile(100), 1000u);
}

TEST(HistogramTest, BucketsTileTheRangeAndAreNarrow) {
  // Consecutive buckets are adjacent, and each is at most 1/1024 of its values wide.
  for (int i = 0; i + 1 < Histogram::BucketCount(); ++i) {
    ASSERT_EQ(Histogram::BucketHighest(i) + 1, Histogram::BucketLowest(i + 1)) << "bucket " << i;
    const uint64_t lo = Histogram::BucketLowest(i);
    const uint64_t width = Histogram::BucketHighest(i) - lo + 1;
    ASSERT_LE(width * 1024, std::max<uint64_t>(lo, 1024)) << "bucket " << i;
  }
  EXPECT_EQ(Histogram::BucketHighest(Histogram::BucketCount() - 1), Histogram::kMaxTrackable - 1);
}

TEST(HistogramTest, EveryValueLandsInTheBucketThatHoldsIt) {
  std::vector<uint64_t> values = {
      0, 1, 2047, 2048, 2049, 4095, 4096, 1'000'000, Histogram::kMaxTrackable - 1};
  for (int bit = 0; bit < 40; ++bit) {
    const uint64_t p = uint64_t{1} << bit;
    values.insert(values.end(), {p - 1, p, p + 1});
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) values.push_back(rng() % Histogram::kMaxTrackable);
  for (const uint64_t v : values) {
    const int i = Histogram::BucketIndex(v);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, Histogram::BucketCount());
    ASSERT_LE(Histogram::BucketLowest(i), v);
    ASSERT_GE(Histogram::BucketHighest(i), v);
  }
}

TEST(HistogramTest, PercentilesWithinATenthOfAPercentOfTheExactSample) {
  // Latency-like data: log-normal around 1 ms in nanoseconds, with a long tail.
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(std::log(1e6), 1.0);
  std::vector<uint64_t> samples;
  Histogram h;
  for (int i = 0; i < 200000; ++i) {
    const auto v = static_cast<uint64_t>(dist(rng));
    samples.push_back(v);
    h.Record(v);
  }
  std::sort(samples.begin(), samples.end());
  long double sum = 0;
  for (const uint64_t v : samples) sum += v;
  EXPECT_NEAR(h.Mean(), static_cast<double>(sum / samples.size()), 1e-6 * h.Mean());
  EXPECT_EQ(h.min(), samples.front());
  EXPECT_EQ(h.max(), samples.back());
  for (const double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * samples.size() * (1 - 1e-12)));
    const uint64_t exact = samples[std::max<size_t>(rank, 1) - 1];
    const uint64_t got = h.ValueAtPercentile(p);
    EXPECT_GE(got, exact) << "p" << p;
    EXPECT_LE(static_cast<double>(got - exact), exact / 1024.0) << "p" << p;
  }
}

TEST(HistogramTest, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(3);
  Histogram a, b, all;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t v = rng() % 100'000'000;
    (i % 3 == 0 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.Mean(), all.Mean());
  for (const double p : {0.0, 25.0, 50.0, 99.0, 100.0}) {
    EXPECT_EQ(a.ValueAtPercentile(p), all.ValueAtPercentile(p)) << "p" << p;
  }
  Histogram empty;
  empty.Merge(all);
  EXPECT_EQ(empty.min(), all.min());
}

TEST(HistogramTest, HugeValuesAreClampedIntoTheLastBucketButMaxStaysExact) {
  Histogram h;
  h.Record(10);
  const uint64_t huge = uint64_t{1} << 50;
  h.Record(huge);
  EXPECT_EQ(h.count(), 2u);
  EXPECT_EQ(h.max(), huge);
  EXPECT_EQ(h.ValueAtPercentile(100), Histogram::kMaxTrackable - 1);
  EXPECT_EQ(h.ValueAtPercentile(50), 10u);
}

TEST(HistogramTest, ResetForgetsEverything) {
  Histogram h;
  h.Record(5);
  h.Record(5000);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.ValueAtPercentile(99), 0u);
  h.Record(7);
  EXPECT_EQ(h.min(), 7u);
  EXPECT_EQ(h.ValueAtPercentile(50), 7u);
}

}  // namespace
}  // namespace raftkv::bench
