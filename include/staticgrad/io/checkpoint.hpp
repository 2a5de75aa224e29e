#pragma once
// A Hugging Face checkpoint: one model.safetensors or several shards listed in
// model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {name: file}}).
//
// Invariants:
//  - Every shard named by the index exists, opens and passes safetensors
//    validation; every tensor of the weight map is present in the shard it is
//    mapped to. Shard names are plain file names next to the index (no
//    absolute paths, no "..").
//  - Lookups return views that stay valid while the checkpoint lives (shards
//    are held by unique_ptr, so moving the checkpoint keeps them in place).
//  - Tied checkpoints (tie_word_embeddings) have no lm_head.weight: use
//    `lm_head_weight`, which returns model.embed_tokens.weight then.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "staticgrad/io/safetensors.hpp"

namespace staticgrad::io {

class checkpoint {
 public:
  // `path`: a directory (holding model.safetensors.index.json or
  // model.safetensors), an index .json file, or a single .safetensors file.
  static checkpoint open(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    checkpoint c;
    c.source_ = path.string();
    if (fs::is_directory(path, ec)) {
      if (fs::exists(path / "model.safetensors.index.json", ec)) c.open_index(path / "model.safetensors.index.json");
      else if (fs::exists(path / "model.safetensors", ec)) c.open_single(path / "model.safetensors");
      else
        throw error("no model.safetensors.index.json or model.safetensors in this directory", {c.source_, {}, {}});
    } else if (path.extension() == ".json") {
      c.open_index(path);
    } else {
      c.open_single(path);
    }
    return c;
  }

  const tensor_view* find(std::string_view name) const {
    auto it = map_.find(std::string(name));
    return it == map_.end() ? nullptr : it->second;
  }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const tensor_view& at(std::string_view name) const {
    if (auto* t = find(name)) return *t;
    throw error("tensor not found in the checkpoint", {source_, std::string(name), {}});
  }
  // All tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    v.reserve(map_.size());
    for (auto& [k, _] : map_) v.push_back(k);
    std::sort(v.begin(), v.end());
    return v;
  }
  std::size_t size() const { return map_.size(); }
  // Throws naming the first floating-point tensor (in name order) holding a
  // NaN or an infinity, and its element. One pass over the bytes (about a
  // second for 1.5 GB): loaders call it when asked or to explain a
  // non-finite result.
  void require_finite() const {
    for (const auto& name : names())
      if (const tensor_view& t = at(name); is_float_dtype(t.dtype)) io::require_finite(t);
  }
  const std::string& source() const { return source_; }
  // The shard files, in the order they were opened.
  std::vector<std::string> files() const {
    std::vector<std::string> v;
    for (auto& s : shards_) v.push_back(s->path());
    return v;
  }

 private:
  void open_single(const std::filesystem::path& p) {
    shards_.push_back(std::make_unique<safetensors_file>(p));
    for (const auto& t : shards_.back()->tensors()) map_.emplace(t.name, &t);
  }
  void open_index(const std::filesystem::path& p) {
    const std::string file = p.string();
    const json idx = read_json_file(p);
    if (!idx.is_object()) throw error("the index must be a JSON object", {file, {}, {}});
    if (const json* md = find_key(idx, "metadata")) {
      if (!md->is_object()) throw error("\"metadata\" must be an object", {file, "metadata", {}});
      if (const json* ts = find_key(*md, "total_size"); ts && !ts->is_number())
        throw error("\"metadata.total_size\" must be a number", {file, "metadata.total_size", {}});
    }
    const json* wm = find_key(idx, "weight_map");
    if (!wm || !wm->is_object())
      throw error("missing \"weight_map\" object {tensor name: shard file}", {file, "weight_map", {}});
    if (wm->empty()) throw error("\"weight_map\" is empty: expected at least one tensor", {file, "weight_map", {}});
    std::map<std::string, safetensors_file*> opened;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string& name = it.key();
      if (!it.value().is_string()) throw error("weight_map value must be a shard file name", {file, name, {}});
      const std::string shard = it.value().get<std::string>();
      const std::filesystem::path sp(shard);
      bool plain = !shard.empty() && sp.is_relative() && sp.filename() == sp && shard != "." && shard != "..";
      if (!plain)
        throw error("shard \"" + shard + "\" must be a plain file name in the index's directory", {file, name, {}});
      safetensors_file*& f = opened[shard];
      if (!f) {
        const auto full = p.parent_path() / sp;
        std::error_code ec;
        if (!std::filesystem::exists(full, ec))
          throw error("the shard \"" + shard + "\" named by the index does not exist", {file, name, {}});
        shards_.push_back(std::make_unique<safetensors_file>(full));
        f = shards_.back().get();
      }
      const tensor_view* t = f->find(name);
      if (!t) throw error("the index maps this tensor to \"" + shard + "\", which does not hold it", {file, name, {}});
      map_.emplace(name, t);
    }
  }

  std::vector<std::unique_ptr<safetensors_file>> shards_;
  std::unordered_map<std::string, const tensor_view*> map_;
  std::string source_;
};

// The output projection of a Qwen2 checkpoint, [vocab, hidden]. With tied
// embeddings Hugging Face shares model.embed_tokens.weight (and omits
// lm_head.weight from the file); otherwise lm_head.weight must be present.
inline const tensor_view& lm_head_weight(const checkpoint& ck, bool tie_word_embeddings) {
  if (tie_word_embeddings) return ck.at("model.embed_tokens.weight");
  if (auto* t = ck.find("lm_head.weight")) return *t;
  throw error("tensor not found: config.json says tie_word_embeddings=false, so lm_head.weight is required",
              {ck.source(), "lm_head.weight", {}});
}

}  // namespace staticgrad::io
