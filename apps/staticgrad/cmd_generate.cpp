// `staticgrad generate` and `staticgrad chat`: text from a model directory
// (base or merged checkpoint) with an optional unmerged PEFT adapter, through
// the chat template and a KV-cache decoder (include/staticgrad/infer/):
// kv_decoder on the CPU, cuda_decoder with --device cuda (make_decoder.hpp).
// See docs/cli.md.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "demo_chat_answers.hpp"
#include "make_decoder.hpp"
#include "staticgrad/infer/chat_template.hpp"
#include "staticgrad/infer/generate.hpp"
#include "staticgrad/infer/generation_config.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"

namespace {

namespace fs = std::filesystem;
using namespace staticgrad;

constexpr double unset = std::numeric_limits<double>::quiet_NaN();

struct generate_cli {
  std::string model, adapter, tokenizer, device = "cpu";
  std::string prompt, system, prompt_ids;
  bool raw = false, json = false, greedy = false, sample = false, quiet = false;
  std::int64_t max_new_tokens = 0;  // 0: generation_config.json's, else 256
  double temperature = unset, top_p = unset, repetition_penalty = unset;
  std::int64_t top_k = -1;
  std::uint64_t seed = 0;
};

void add_model_options(CLI::App* sub, generate_cli& g) {
  sub->add_option("--model", g.model, "model directory: a Hugging Face checkpoint, base or merged")->required();
  sub->add_option("--adapter", g.adapter, "PEFT LoRA adapter directory, applied unmerged (default: none)");
  sub->add_option("--tokenizer", g.tokenizer,
                  "tokenizer.json or a directory holding one (default: the model directory's, else the vendored "
                  "Qwen2 tokenizer installed with staticgrad)");
  sub->add_option("--device", g.device, "cpu, or cuda (bf16 weights and KV cache on the GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--max-new-tokens", g.max_new_tokens,
                  "tokens to generate at most (default: generation_config.json's max_new_tokens, else 256)");
  sub->add_flag("--greedy", g.greedy, "pick the most likely token (overrides generation_config.json's do_sample)");
  sub->add_flag("--sample", g.sample, "sample (temperature, top-p, top-k)");
  sub->add_option("--temperature", g.temperature, "sampling temperature (default: generation_config.json's, else 1)");
  sub->add_option("--top-p", g.top_p, "nucleus sampling mass (default: generation_config.json's, else 1)");
  sub->add_option("--top-k", g.top_k, "keep the k most likely tokens, 0 = all (default: generation_config.json's, else 50)");
  sub->add_option("--repetition-penalty", g.repetition_penalty,
                  "divide (multiply, if negative) the logits of tokens already seen (default: generation_config.json's, else 1)");
  sub->add_option("--seed", g.seed, "seed of the sampler")->capture_default_str();
  sub->add_option("--system", g.system, "system message (default: the chat template's)");
  sub->add_flag("--quiet", g.quiet, "no statistics line on stderr");
}

struct session {
  std::unique_ptr<infer::decoder> dec;
  std::optional<io::tokenizer> tok;
  infer::chat_template tmpl;
  infer::generation_options gen;
};

session open_session(const generate_cli& g, bool need_tokenizer) {
  require(!(g.greedy && g.sample), "--greedy and --sample exclude each other", {"", "--sample", {}});
  std::error_code ec;
  require(fs::exists(fs::path(g.model) / "config.json", ec), "no config.json in the model directory",
          {g.model, "--model", {}});
  session s{g.device == "cuda" ? cli::make_cuda_decoder(g.model, g.adapter)
                               : cli::make_cpu_decoder(g.model, g.adapter),
            std::nullopt, {}, {}};
  const auto gc = infer::read_generation_config(g.model, s.dec->config());
  auto& o = s.gen;
  o.sampling = gc.sampling;
  if (g.greedy) o.sampling.do_sample = false;
  if (g.sample) o.sampling.do_sample = true;
  if (!std::isnan(g.temperature)) o.sampling.temperature = g.temperature;
  if (!std::isnan(g.top_p)) o.sampling.top_p = g.top_p;
  if (g.top_k >= 0) o.sampling.top_k = g.top_k;
  if (!std::isnan(g.repetition_penalty)) o.sampling.repetition_penalty = g.repetition_penalty;
  o.max_new_tokens = g.max_new_tokens > 0 ? g.max_new_tokens : gc.max_new_tokens.value_or(256);
  o.seed = g.seed;
  o.stop_ids = gc.eos_token_ids;
  if (need_tokenizer) {
    s.tok = io::tokenizer::from_file(io::resolve_tokenizer(g.tokenizer, g.model));
    require(s.tok->vocab_size() <= std::size_t(s.dec->vocab()),
            "the tokenizer has " + std::to_string(s.tok->vocab_size()) + " ids, the model's vocabulary only " +
                std::to_string(s.dec->vocab()),
            {g.model, "vocab_size", {}});
    if (!g.raw) {
      s.tmpl = infer::load_chat_template(g.model);
      if (!g.system.empty()) s.tmpl.default_system = g.system;
      for (const auto& t : s.tmpl.stop_tokens)
        if (auto id = s.tok->token_to_id(t); id >= 0 && std::find(o.stop_ids.begin(), o.stop_ids.end(), id) == o.stop_ids.end())
          o.stop_ids.push_back(id);
    }
  }
  infer::check_sampling(o.sampling);
  return s;
}

// Prints token bytes as they come, holding back an incomplete UTF-8 sequence.
struct utf8_stream {
  std::string pending;
  void put(const std::string& bytes) {
    pending += bytes;
    std::size_t n = pending.size(), k = 0;  // keep the trailing incomplete character
    while (k < 4 && k < n && (static_cast<unsigned char>(pending[n - 1 - k]) & 0xC0) == 0x80) ++k;
    std::size_t cut = n;
    if (k < n) {
      const unsigned char lead = static_cast<unsigned char>(pending[n - 1 - k]);
      const std::size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (need > k + 1) cut = n - 1 - k;
    }
    std::fwrite(pending.data(), 1, cut, stdout);
    std::fflush(stdout);
    pending.erase(0, cut);
  }
  void finish() {
    if (!pending.empty()) std::fwrite(pending.data(), 1, pending.size(), stdout);
    pending.clear();
    std::fflush(stdout);
  }
};

void print_stats(const infer::generation_result& r) {
  std::fprintf(stderr, "[%zu prompt tokens in %.2f s; %zu new tokens in %.2f s, %.1f tokens/s%s]\n", r.prompt_tokens,
               r.prefill_s, r.ids.size(), r.prefill_s + r.decode_s,
               r.ids.empty() ? 0.0 : double(r.ids.size()) / std::max(1e-9, r.prefill_s + r.decode_s),
               r.stopped ? "; stopped at an end token" : "");
}

std::vector<std::int32_t> parse_ids(const std::string& list) {
  std::vector<std::int32_t> v;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    try {
      std::size_t used = 0;
      const long long x = std::stoll(item, &used);
      require(item.find_first_not_of(" ", used) == std::string::npos && x >= 0 && x <= INT32_MAX, "");
      v.push_back(std::int32_t(x));
    } catch (const std::exception&) {
      throw error("expected a comma list of token ids, got \"" + item + "\"", {"", "--prompt-ids", {}});
    }
  }
  require(!v.empty(), "no token ids given", {"", "--prompt-ids", {}});
  return v;
}

int run_generate(const generate_cli& g) {
  const bool ids_mode = !g.prompt_ids.empty();
  require(ids_mode != !g.prompt.empty(), "give exactly one of --prompt and --prompt-ids", {"", "--prompt", {}});
  auto s = open_session(g, !ids_mode);
  std::vector<std::int32_t> prompt;
  if (ids_mode) prompt = parse_ids(g.prompt_ids);
  else {
    const std::string text = g.raw ? g.prompt : s.tmpl.render({{"user", g.prompt}});
    prompt = s.tok->encode(text);
  }
  utf8_stream out;
  const bool stream = !g.json && !ids_mode;
  const auto r = infer::generate(*s.dec, prompt, s.gen, [&](std::int32_t id) {
    if (stream) out.put(s.tok->id_to_bytes(id));
  });
  if (stream) {
    out.finish();
    std::fputc('\n', stdout);
  } else {
    nlohmann::json j{{"prompt_ids", prompt}, {"ids", r.ids}, {"stopped", r.stopped}};  // timings: stderr
    if (s.tok) {
      std::vector<std::int32_t> text_ids(r.ids.begin(), r.ids.end() - (r.stopped ? 1 : 0));
      j["text"] = s.tok->decode(text_ids);
    }
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  }
  if (!g.quiet) print_stats(r);
  return 0;
}

// Interactive: each stdin line is a user turn; the KV cache keeps the
// conversation, so a turn only prefills what the template adds after it.
int run_chat(const generate_cli& g) {
  auto s = open_session(g, true);
  std::vector<infer::chat_message> messages;
  std::vector<std::int32_t> fed;  // the tokens in the cache, in order
  const bool tty = ::isatty(0);
  if (tty) std::fprintf(stderr, "chat with %s%s (/reset clears, /exit or Ctrl-D ends)\n", g.model.c_str(),
                        g.adapter.empty() ? "" : (" + " + g.adapter).c_str());
  std::string line;
  for (;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      messages.clear();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const auto prompt = s.tok->encode(s.tmpl.render(messages));
    std::size_t common = 0;  // reuse the cache for the shared prefix
    while (common < fed.size() && common + 1 < prompt.size() && fed[common] == prompt[common]) ++common;
    s.dec->truncate(common);
    fed.assign(prompt.begin(), prompt.begin() + std::ptrdiff_t(common));
    utf8_stream out;
    std::string reply;
    const auto r = infer::generate(*s.dec, prompt, s.gen, [&](std::int32_t id) {
      out.put(s.tok->id_to_bytes(id));
      reply += s.tok->id_to_bytes(id);
    });
    out.finish();
    std::fputc('\n', stdout);
    fed = prompt;
    fed.insert(fed.end(), r.ids.begin(), r.ids.end() - (r.ids.empty() ? 0 : 1));  // the last id was not fed
    messages.push_back({"assistant", reply});
    if (!g.quiet) print_stats(r);
  }
  return 0;
}

staticgrad::cli::command_registrar reg_generate{{"generate", [](CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "Generate a reply (chat template, KV cache; greedy or sampled)");
  auto g = std::make_shared<generate_cli>();
  add_model_options(sub, *g);
  sub->add_option("--prompt", g->prompt, "the user message (rendered with the chat template)");
  sub->add_flag("--raw", g->raw, "give --prompt to the model as it is, without the chat template");
  sub->add_option("--prompt-ids", g->prompt_ids,
                  "the prompt as a comma list of token ids (no tokenizer, no template); prints ids as JSON");
  sub->add_flag("--json", g->json, "print one JSON line (prompt_ids, ids, stopped, text) instead of streaming");
  return std::function<int()>([g] { return run_generate(*g); });
}}};

staticgrad::cli::command_registrar reg_chat{{"chat", [](CLI::App& app) {
  auto* sub = app.add_subcommand("chat", "Interactive chat: each line of stdin is a user message");
  auto g = std::make_shared<generate_cli>();
  add_model_options(sub, *g);
  return std::function<int()>([g] { return run_chat(*g); });
}}};

}  // namespace

namespace staticgrad::cli {

int answer_demo_questions(const std::filesystem::path& dir, const train::demo_chat& d) {
  generate_cli g;
  g.model = (dir / "model").string();
  g.adapter = (dir / "adapter").string();
  auto s = open_session(g, true);
  int right = 0;
  for (const auto& [q, a] : d.facts) {
    s.dec->truncate(0);
    const auto r = infer::generate(*s.dec, s.tok->encode(s.tmpl.render({{"system", d.system}, {"user", q}})), s.gen);
    const std::vector<std::int32_t> text(r.ids.begin(), r.ids.end() - (r.stopped ? 1 : 0));
    const std::string answer = s.tok->decode(text);
    const bool ok = r.stopped && answer == a;
    right += ok;
    std::cout << fmt::format("  {:<36} -> {:<10} {}", q, answer, ok ? "(as taught)" : "(taught: " + a + ")")
              << std::endl;
  }
  return right;
}

}  // namespace staticgrad::cli
