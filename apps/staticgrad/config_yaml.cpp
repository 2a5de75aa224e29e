// See config_yaml.hpp.
#include "config_yaml.hpp"

#include <yaml-cpp/yaml.h>

#include <vector>

#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

namespace {

bool skipped(const CLI::Option& o) {
  const auto& ln = o.get_lnames();
  return ln.empty() || ln.front() == "help" || ln.front() == "config";
}

}  // namespace

void apply_yaml_config(CLI::App& sub, const std::string& file) {
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(file);
  } catch (const YAML::BadFile&) {
    throw error("cannot read the configuration file", {file, "--config", {}});
  } catch (const YAML::Exception& e) {
    throw error("not valid YAML: " + e.msg, {file, "", std::size_t(e.mark.line + 1)});
  }
  if (doc.IsNull()) return;
  require(doc.IsMap(), "expected a YAML map of option names to values (lora-r: 16)", {file, "", {}});
  for (const auto& kv : doc) {
    const std::size_t line = std::size_t(kv.first.Mark().line + 1);
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string("?");
    CLI::Option* opt = sub.get_option_no_throw("--" + key);
    require(opt != nullptr && !skipped(*opt),
            "unknown key: expected the long name of a `" + sub.get_name() + "` option without its dashes (e.g. lora-r)",
            {file, key, line});
    std::vector<std::string> values;
    if (kv.second.IsScalar()) {
      values.push_back(kv.second.Scalar());
    } else if (kv.second.IsSequence()) {
      for (const auto& v : kv.second) {
        require(v.IsScalar(), "expected a list of plain values", {file, key, line});
        values.push_back(v.Scalar());
      }
    } else {
      throw error("expected a value or a list of values", {file, key, line});
    }
    if (opt->count() > 0) continue;  // the command line wins
    try {
      for (const auto& v : values) opt->add_result(v);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw error(std::string("bad value: ") + e.what(), {file, key, line});
    }
  }
}

std::string resolved_yaml(const CLI::App& sub) {
  YAML::Emitter y;
  y << YAML::BeginMap;
  for (const CLI::Option* o : sub.get_options()) {
    if (skipped(*o)) continue;
    std::vector<std::string> values = o->results();
    if (values.empty()) {
      if (o->get_expected_max() == 0) values = {"false"};  // a flag not given
      else if (!o->get_default_str().empty()) values = {o->get_default_str()};
      else continue;  // no value and no default: left out
    }
    y << YAML::Key << o->get_lnames().front() << YAML::Value;
    if (o->get_expected_max() > 1 && o->get_type_size() > 0) {
      y << YAML::BeginSeq;
      for (const auto& v : values) y << v;
      y << YAML::EndSeq;
    } else {
      y << values.back();
    }
  }
  y << YAML::EndMap;
  return std::string(y.c_str()) + "\n";
}

}  // namespace staticgrad::cli
