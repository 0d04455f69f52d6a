// Strict JSON config layering: the code's defaults define the known keys; presets, files and
// --set overrides may only change them.
#include "segicl/core/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"

namespace segicl::config {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::vector<std::string> keys_of(const Json& j) {
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  return keys;
}

void unknown_key(const std::string& key, const Json& base, const std::string& origin,
                 const std::string& path) {
  std::string suggestion = closest_key(key, keys_of(base));
  SEGICL_THROW(ConfigError, "unknown config key '" + path + key + "'", origin,
               suggestion.empty() ? "remove it; see configs/ for the known keys"
                                  : "did you mean '" + path + suggestion + "'?");
}

void merge_at(Json& base, const Json& patch, const std::string& origin, const std::string& path) {
  if (!patch.is_object()) {
    SEGICL_THROW(ConfigError, "config section '" + path + "' must be a JSON object", origin, "");
  }
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    auto target = base.find(it.key());
    if (target == base.end()) unknown_key(it.key(), base, origin, path);
    if (target->is_object() && it->is_object()) {
      merge_at(*target, *it, origin, path + it.key() + ".");
    } else {
      *target = *it;
    }
  }
}

}  // namespace

Json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    SEGICL_THROW(ConfigError, std::string("malformed JSON: ") + e.what(), path,
                 "fix the syntax at the byte offset given");
  }
}

void merge_strict(Json& base, const Json& patch, const std::string& origin) {
  merge_at(base, patch, origin, "");
}

void apply_override(Json& base, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    SEGICL_THROW(ConfigError, "override '" + assignment + "' is not key=value", "",
                 "write e.g. --set train.learning_rate=3e-4");
  }
  std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  Json value;
  try {
    value = Json::parse(text);
  } catch (const Json::parse_error&) {
    value = text;
  }
  Json* node = &base;
  std::string path;
  std::stringstream parts(key);
  std::string part;
  std::vector<std::string> segments;
  while (std::getline(parts, part, '.')) segments.push_back(part);
  for (size_t i = 0; i < segments.size(); ++i) {
    auto it = node->find(segments[i]);
    if (!node->is_object() || it == node->end()) unknown_key(segments[i], *node, "--set", path);
    path += segments[i] + ".";
    node = &*it;
  }
  *node = value;
}

std::string closest_key(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(3, key.size() / 3) + 1;
  for (const auto& candidate : known) {
    size_t d = edit_distance(key, candidate);
    if (d < best_distance) best_distance = d, best = candidate;
  }
  return best;
}

}  // namespace segicl::config
