// Structural check of the pickles inside a torch archive (data.pkl, constants.pkl, *.debug_pkl)
// before LibTorch's unpickler sees them. Not an unpickler: it builds nothing.
#pragma once

#include <string>
#include <string_view>

namespace segicl {

// Walks the pickle `bytes` (entry `entry` of the checkpoint `path`) opcode by opcode and throws
// FormatError naming `path` and the entry unless it is a pickle LibTorch's own pickler could have
// written: only the opcodes it writes (protocol 2), every length and argument inside the stream,
// memo writes only to the next free slot or an existing one, memo reads of filled slots, no
// opcode taking more values than the stack holds above the last MARK, and one value at STOP,
// which ends the stream. Why: LibTorch 1.13's unpickler trusts all of these (a 12 KB file made it
// allocate 13.5 GB through a memo index; stack underflows read freed memory; fuzz_checkpoint).
// Thread-safe.
void verify_torch_pickle(std::string_view bytes, const std::string& entry, const std::string& path);

}  // namespace segicl
