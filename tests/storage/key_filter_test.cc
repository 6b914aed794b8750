// KeyFilter: never denies a key it was given (the state machine would lose a
// previous value), rarely admits one it was not, grows by layers, and turns
// itself off rather than exceed its budget.
#include "storage/key_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace raftkv::storage {
namespace {

std::string Key(int i) { return "key-" + std::to_string(i); }

TEST(KeyFilter, HoldsEveryAddedKeyAcrossLayersAndFewOthers) {
  KeyFilter f(64 << 20);
  ASSERT_TRUE(f.enabled());
  EXPECT_EQ(f.layers(), 1u);
  // Past the first layer's capacity, so that a second layer is made.
  const int n = KeyFilter::kFirstLayerKeys + KeyFilter::kFirstLayerKeys / 2;
  for (int i = 0; i < n; i += 2) f.Add(Key(i));
  for (int i = 1; i < n; i += 2) f.Add(Key(i));
  EXPECT_EQ(f.layers(), 2u);
  EXPECT_EQ(f.adds(), static_cast<uint64_t>(n));
  int missing = 0;
  for (int i = 0; i < n; ++i) missing += !f.MayContain(Key(i));
  EXPECT_EQ(missing, 0);
  // Sized for 1% per layer: two layers admit at most about 2% of others.
  int admitted = 0;
  constexpr int kOthers = 100000;
  for (int i = 0; i < kOthers; ++i) admitted += f.MayContain("other-" + std::to_string(i));
  EXPECT_LT(admitted, kOthers * 3 / 100);
  EXPECT_FALSE(f.MayContain(""));
}

TEST(KeyFilter, ClearForgetsEveryKey) {
  KeyFilter f(64 << 20);
  for (int i = 0; i < 1000; ++i) f.Add(Key(i));
  EXPECT_EQ(f.adds(), 1000u);
  f.Clear();
  EXPECT_TRUE(f.enabled());
  EXPECT_EQ(f.adds(), 0u);
  int admitted = 0;
  for (int i = 0; i < 1000; ++i) admitted += f.MayContain(Key(i));
  EXPECT_EQ(admitted, 0);
}

TEST(KeyFilter, OverBudgetItTurnsItselfOffAndAdmitsEverything) {
  KeyFilter none(0);
  EXPECT_FALSE(none.enabled());
  EXPECT_TRUE(none.MayContain("anything"));
  none.Add("x");
  EXPECT_EQ(none.bytes(), 0u);

  // Room for the first layer (about 1.2 MiB) but not for the second.
  KeyFilter small(2 << 20);
  ASSERT_TRUE(small.enabled());
  EXPECT_LE(small.bytes(), size_t{2} << 20);
  for (int i = 0; i <= KeyFilter::kFirstLayerKeys; ++i) small.Add(Key(i));
  EXPECT_FALSE(small.enabled());
  EXPECT_EQ(small.bytes(), 0u);
  EXPECT_EQ(small.adds(), 0u);
  EXPECT_TRUE(small.MayContain("never added"));
  // Clear starts over within the budget.
  small.Clear();
  EXPECT_TRUE(small.enabled());
  EXPECT_FALSE(small.MayContain(Key(1)));
}

TEST(KeyFilter, DisableAdmitsEverythingUntilClear) {
  KeyFilter f(64 << 20);
  f.Add("a");
  f.Disable();
  EXPECT_FALSE(f.enabled());
  EXPECT_TRUE(f.MayContain("b"));
  f.Clear();
  EXPECT_FALSE(f.MayContain("a"));
}

}  // namespace
}  // namespace raftkv::storage
