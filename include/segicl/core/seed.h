// Seed derivation by name (STYLE.md "Determinism"): each consumer derives its own stream from the
// run seed and a stable name, so adding a consumer never shifts the others.
#pragma once

#include <cstdint>
#include <string_view>

namespace segicl {

// 64-bit FNV-1a of `name` mixed with `seed` through splitmix64. Pure and platform-independent.
uint64_t derive_seed(uint64_t seed, std::string_view name);

// splitmix64 step; a small, fast, well-distributed generator for index shuffles and hashing.
uint64_t splitmix64(uint64_t& state);

}  // namespace segicl
