// train::training_loop's checkpoints, resume and best adapter, compiled once
// (src/train/CMakeLists.txt; its users see loop.hpp's declarations).
#include "staticgrad/train/loop_checkpoint_impl.hpp"
