#pragma once
// `demo --chat`'s last step, defined in cmd_generate.cpp (the generation
// command's TU): asks the trained model each question of the demo through the
// chat template and the KV-cache decoder, prints question, answer and whether
// it is the one taught, and returns how many are.
#include <filesystem>

#include "staticgrad/train/demo_chat.hpp"

namespace staticgrad::cli {

int answer_demo_questions(const std::filesystem::path& dir, const train::demo_chat& d);

}  // namespace staticgrad::cli
