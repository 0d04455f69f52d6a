// JSON configuration helpers: layered presets (defaults <- preset <- file <- --set key=value) with
// unknown keys rejected by name and a closest-key suggestion. Not a schema system: each options
// struct reads its own keys.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace segicl::config {

using Json = nlohmann::json;

// Reads a JSON file; IoError if missing, ConfigError (naming the file and line) if malformed.
Json read_json_file(const std::string& path);

// Recursively overlays `patch` onto `base`; a key absent from base is a ConfigError naming
// `origin` and suggesting the closest known key (so typos never pass silently).
void merge_strict(Json& base, const Json& patch, const std::string& origin);

// Applies "a.b.c=value" (value parsed as JSON, else taken as a string) to `base`; the path must
// already exist in base.
void apply_override(Json& base, const std::string& assignment);

// The known key closest to `key` by edit distance, or "" if none is reasonably close.
std::string closest_key(const std::string& key, const std::vector<std::string>& known);

// Reads `key` from `j` into `value` when present (keeps the default otherwise).
template <typename T>
void get_if(const Json& j, const char* key, T& value) {
  auto it = j.find(key);
  if (it != j.end() && !it->is_null()) value = it->get<T>();
}

}  // namespace segicl::config
