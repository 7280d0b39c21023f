#pragma once
// Encoding and decoding of frames. Pure functions over bytes: no I/O, no allocation on the
// decode path, every length checked against the protocol's bounds before it is trusted.

#include <cstddef>
#include <span>
#include <vector>

#include "tether/errc.hpp"
#include "tether/wire/frame.hpp"

namespace tether::wire {

enum class decode_status { complete, need_more, error };

struct decode_result {
  decode_status status = decode_status::need_more;
  std::size_t consumed = 0;  // bytes of input the frame took (complete only)
  frame value;               // valid when complete; refers into the input
  errc error = errc::ok;     // protocol_error or frame_too_large (error only)
  const char* reason = "";   // what was wrong, for the log (error only)
};

/// Decodes the first frame of `input`. need_more: the input holds only a prefix of a valid
/// frame. error: the input can never become a valid frame; the session must end.
decode_result decode(std::span<const std::byte> input) noexcept;

/// Appends the encoding of `f` to `out`. Fields must be within the protocol's bounds
/// (callers validate user input first); an out-of-bounds field is a bug and asserts.
void encode(const frame& f, std::vector<std::byte>& out);

}  // namespace tether::wire
