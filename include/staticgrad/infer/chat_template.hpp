#pragma once
// The Qwen2.5-Instruct chat template (ChatML), as `generate`, `chat` and the
// training data (io/dataset.hpp's messages lines) render a conversation:
//
//   <|im_start|>{role}\n{content}<|im_end|>\n      for each message
//   <|im_start|>system\n{default system}<|im_end|>\n first, when the
//                                                   conversation has no system message
//   <|im_start|>assistant\n                         where generation starts
//
// The default system message is Qwen2.5's ("You are Qwen, created by Alibaba
// Cloud. You are a helpful assistant."), unless the model directory's
// tokenizer_config.json has a chat_template: staticgrad does not run Jinja,
// so it accepts a template only if it is ChatML (it writes <|im_start|> and
// <|im_end|>) and takes its default system message from the literal
// '<|im_start|>system\n...<|im_end|>' the template contains (none when it has
// none, as Qwen3's); any other template is refused with its file named, since
// rendering it as ChatML would train or prompt the model in a format it was
// not made for. The eos_token of tokenizer_config.json is added to the stop
// tokens.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/json_util.hpp"

namespace staticgrad::infer {

inline constexpr const char* qwen2_5_default_system =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

struct chat_message {
  std::string role, content;
};

struct chat_template {
  std::optional<std::string> default_system = std::string(qwen2_5_default_system);
  std::vector<std::string> stop_tokens = {"<|im_end|>", "<|endoftext|>"};
  std::string source = "built-in Qwen2.5-Instruct template";

  // The prompt text: the conversation, then the start of the assistant's turn
  // when `add_generation_prompt`.
  std::string render(const std::vector<chat_message>& messages, bool add_generation_prompt = true) const {
    std::string s;
    auto add = [&](const std::string& role, const std::string& content) {
      s += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
    };
    if (default_system && (messages.empty() || messages.front().role != "system")) add("system", *default_system);
    for (const auto& m : messages) add(m.role, m.content);
    if (add_generation_prompt) s += "<|im_start|>assistant\n";
    return s;
  }
};

namespace detail {
// The Jinja string literal '<|im_start|>system\n...<|im_end|>' of a template
// (its "\n" is the two characters of the Jinja escape).
inline std::optional<std::string> literal_system_message(const std::string& tmpl) {
  const std::string head = "<|im_start|>system\\n", tail = "<|im_end|>";
  for (std::size_t at = tmpl.find(head); at != std::string::npos; at = tmpl.find(head, at + 1)) {
    const std::size_t b = at + head.size(), e = tmpl.find(tail, b);
    if (e == std::string::npos) break;
    const std::string body = tmpl.substr(b, e - b);
    if (body.find_first_of("{}'\"") == std::string::npos) return body;  // a literal, not an expression
  }
  return std::nullopt;
}
}  // namespace detail

// The template of `model_dir` (tokenizer_config.json), or the built-in one.
inline chat_template load_chat_template(const std::filesystem::path& model_dir) {
  chat_template t;
  const auto path = model_dir / "tokenizer_config.json";
  std::error_code ec;
  if (model_dir.empty() || !std::filesystem::exists(path, ec)) return t;
  const std::string file = path.string();
  const io::json j = io::read_json_file(path);
  require(j.is_object(), "tokenizer_config.json must be a JSON object", {file, "", {}});
  if (const io::json* e = io::find_key(j, "eos_token"); e && !e->is_null()) {
    std::string eos = e->is_object() && e->contains("content") ? io::json_string((*e)["content"], file, "eos_token")
                                                               : io::json_string(*e, file, "eos_token");
    if (std::find(t.stop_tokens.begin(), t.stop_tokens.end(), eos) == t.stop_tokens.end()) t.stop_tokens.push_back(eos);
  }
  const io::json* ct = io::find_key(j, "chat_template");
  if (!ct || ct->is_null()) return t;
  std::string tmpl;
  if (ct->is_string()) tmpl = ct->get<std::string>();
  else if (ct->is_array()) {  // [{"name": "default", "template": "..."}, ...]
    for (const auto& x : *ct)
      if (x.is_object() && x.value("name", "") == "default" && x.contains("template") && x["template"].is_string())
        tmpl = x["template"].get<std::string>();
    require(!tmpl.empty(), "chat_template is a list without a \"default\" entry", {file, "chat_template", {}});
  } else {
    throw error("chat_template must be a string or a list of {name, template}", {file, "chat_template", {}});
  }
  require(tmpl.find("<|im_start|>") != std::string::npos && tmpl.find("<|im_end|>") != std::string::npos,
          "this chat template is not ChatML (<|im_start|>role ... <|im_end|>); staticgrad renders only ChatML "
          "(Qwen2/Qwen2.5). Pass --raw to give the prompt text as it is",
          {file, "chat_template", {}});
  t.default_system = detail::literal_system_message(tmpl);
  t.source = file;
  return t;
}

}  // namespace staticgrad::infer
