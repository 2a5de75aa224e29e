// train::training_loop's run, steps, data and evaluation, compiled once
// (src/train/CMakeLists.txt; its users see loop.hpp's declarations).
#include "staticgrad/train/loop_impl.hpp"
