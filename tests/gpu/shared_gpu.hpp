// Whether this GPU test shares the device with other processes.
//
// cudaMemGetInfo reports the device's free memory, device-wide: a test that
// checks how much memory it took by the difference of two readings is only
// right when nothing else allocates in between. scripts/gpu_sanitize.sh runs
// several tests at once under compute-sanitizer and says so with
// STATICGRAD_TEST_SHARED_GPU=1; those tests then print that difference but do
// not check it (their exact allocation counters are still checked; the
// device-wide check is made by the same test run alone, as ctest runs it).
#pragma once

#include <cstdlib>
#include <cstring>

namespace sgtest {

inline bool gpu_is_shared() {
  const char* v = std::getenv("STATICGRAD_TEST_SHARED_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace sgtest
