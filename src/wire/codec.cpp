#include "tether/wire/codec.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tether::wire {
namespace {

// Reads fixed-size big-endian fields from a payload, remembering whether it ran short.
class reader {
 public:
  explicit reader(std::span<const std::byte> in) : in_(in) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(take(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(take(4)); }
  std::uint64_t u64() { return take(8); }

  std::string_view text(std::size_t n) {
    if (!has(n)) return {};
    std::string_view s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  // A u16 length, then that many bytes of text: the messages of REFUSE, OPEN_RESULT,
  // RESET and GOAWAY. False when the length is above max_message.
  bool message(std::string_view& out) {
    const auto n = u16();
    if (n > max_message) return false;
    out = text(n);
    return true;
  }

  bool short_read() const noexcept { return short_; }
  bool at_end() const noexcept { return pos_ == in_.size(); }

 private:
  bool has(std::size_t n) {
    if (in_.size() - pos_ < n) short_ = true;
    return !short_;
  }
  std::uint64_t take(std::size_t n) {
    if (!has(n)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | std::to_integer<std::uint8_t>(in_[pos_ + i]);
    pos_ += n;
    return v;
  }

  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool short_ = false;
};

class writer {
 public:
  explicit writer(std::vector<std::byte>& out) : out_(out) {}
  void u8(std::uint64_t v) { put(v, 1); }
  void u16(std::uint64_t v) { put(v, 2); }
  void u24(std::uint64_t v) { put(v, 3); }
  void u32(std::uint64_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void bytes(const void* p, std::size_t n) {
    auto b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }

 private:
  void put(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  std::vector<std::byte>& out_;
};

decode_result fail(errc e, const char* reason) {
  decode_result r;
  r.status = decode_status::error;
  r.error = e;
  r.reason = reason;
  return r;
}

bool window_ok(std::uint32_t w) { return w >= 1 && w <= max_window; }

// Parses a payload whose header has been checked. Returns a decode_result with status
// complete or error (never need_more: the payload is whole).
decode_result parse(frame_type type, std::uint8_t flags, std::uint32_t id,
                    std::span<const std::byte> payload) {
  reader r(payload);
  decode_result out;
  out.status = decode_status::complete;
  const bool session_frame = type == frame_type::hello || type == frame_type::welcome ||
                             type == frame_type::refuse || type == frame_type::ping ||
                             type == frame_type::goaway;
  if (session_frame && id != 0) return fail(errc::protocol_error, "session frame on a stream");
  if (!session_frame && type != frame_type::window_update && id == 0)
    return fail(errc::protocol_error, "stream frame on stream 0");

  switch (type) {
    case frame_type::hello: {
      hello h;
      h.version = r.u16();
      const auto role_byte = r.u8();
      h.session_window = r.u32();
      h.stream_window = r.u32();
      const auto token_len = r.u16();
      if (token_len > max_token) return fail(errc::frame_too_large, "token too long");
      h.token = r.text(token_len);
      h.lanes = (flags & flag_lanes) != 0;
      h.bulk_lane = (flags & flag_bulk_lane) != 0;
      if (role_byte > 1) return fail(errc::protocol_error, "unknown role");
      h.role = static_cast<role>(role_byte);
      if (!r.short_read() && (!window_ok(h.session_window) || !window_ok(h.stream_window)))
        return fail(errc::protocol_error, "window out of range");
      out.value = h;
      break;
    }
    case frame_type::welcome: {
      welcome w;
      w.version = r.u16();
      w.session_window = r.u32();
      w.stream_window = r.u32();
      w.keepalive_ms = r.u32();
      w.lanes = (flags & flag_lanes) != 0;
      if (!r.short_read() && (!window_ok(w.session_window) || !window_ok(w.stream_window)))
        return fail(errc::protocol_error, "window out of range");
      out.value = w;
      break;
    }
    case frame_type::refuse: {
      refuse f;
      f.code = r.u8();
      if (!r.message(f.message)) return fail(errc::frame_too_large, "message too long");
      out.value = f;
      break;
    }
    case frame_type::open: {
      open o;
      o.stream_id = id;
      o.proto = r.u8();
      o.port = r.u16();
      o.window = r.u32();
      const auto n = r.u8();
      o.device = r.text(n);
      o.resume = (flags & flag_resume) != 0;
      if (r.short_read()) break;
      if (o.proto > max_stream_protocol)
        return fail(errc::protocol_error, "unknown stream protocol");
      if (!window_ok(o.window)) return fail(errc::protocol_error, "window out of range");
      if (o.resume) {
        if (o.proto != 0 || o.port != 0 || !parse_move_token(o.device))
          return fail(errc::protocol_error, "a claim names a TCP stream's move token, no port");
      } else if (o.proto == stream_protocol_catalog) {
        if (!o.device.empty() || o.port != 0)
          return fail(errc::protocol_error, "a catalog stream names no device or port");
      } else if (!valid_device_id(o.device)) {
        return fail(errc::protocol_error, "invalid device id");
      }
      out.value = o;
      break;
    }
    case frame_type::open_result: {
      open_result o;
      o.stream_id = id;
      o.code = r.u8();
      o.window = r.u32();
      o.movable = (flags & flag_movable) != 0;
      if (!r.message(o.message)) return fail(errc::frame_too_large, "message too long");
      if (!r.short_read() && o.code == 0 && !window_ok(o.window))
        return fail(errc::protocol_error, "window out of range");
      out.value = o;
      break;
    }
    case frame_type::data: {
      if (payload.size() > max_data_payload) return fail(errc::frame_too_large, "data frame too large");
      if (flags & ~flag_fin) return fail(errc::protocol_error, "unknown data flags");
      out.value = data{id, (flags & flag_fin) != 0, payload};
      return out;  // the payload is the whole frame
    }
    case frame_type::datagram: {
      if (payload.size() > max_datagram)
        return fail(errc::frame_too_large, "datagram above 65,507 bytes");
      if (flags != 0) return fail(errc::protocol_error, "unknown datagram flags");
      out.value = datagram{id, payload};
      return out;  // the payload is the whole frame
    }
    case frame_type::move: {
      if (flags != 0) return fail(errc::protocol_error, "unknown move flags");
      if (payload.size() != move_token_size)
        return fail(errc::protocol_error, "a move token is 16 bytes");
      move m;
      m.stream_id = id;
      std::copy(payload.begin(), payload.end(), m.token.begin());
      out.value = m;
      return out;  // the payload is the whole frame
    }
    case frame_type::window_update: {
      window_update w;
      w.stream_id = id;
      w.increment = r.u32();
      if (!r.short_read() && (w.increment == 0 || w.increment > max_window))
        return fail(errc::protocol_error, "window increment out of range");
      out.value = w;
      break;
    }
    case frame_type::reset: {
      reset f;
      f.stream_id = id;
      f.code = r.u8();
      if (!r.message(f.message)) return fail(errc::frame_too_large, "message too long");
      out.value = f;
      break;
    }
    case frame_type::ping: {
      if (flags & ~flag_ack) return fail(errc::protocol_error, "unknown ping flags");
      out.value = ping{(flags & flag_ack) != 0, r.u64()};
      break;
    }
    case frame_type::goaway: {
      goaway g;
      g.last_stream_id = r.u32();
      g.code = r.u8();
      if (!r.message(g.message)) return fail(errc::frame_too_large, "message too long");
      out.value = g;
      break;
    }
    default:
      return fail(errc::protocol_error, "unknown frame type");
  }
  if (r.short_read()) return fail(errc::protocol_error, "frame shorter than its fields");
  if (!r.at_end()) return fail(errc::protocol_error, "trailing bytes after the frame's fields");
  return out;
}

}  // namespace

std::string move_token_text(const move_token& t) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * t.size());
  for (auto b : t) {
    const auto v = std::to_integer<unsigned>(b);
    out.push_back(digits[v >> 4]);
    out.push_back(digits[v & 0xf]);
  }
  return out;
}

std::optional<move_token> parse_move_token(std::string_view text) noexcept {
  if (text.size() != 2 * move_token_size) return std::nullopt;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  move_token t{};
  for (std::size_t i = 0; i < t.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    t[i] = static_cast<std::byte>(hi << 4 | lo);
  }
  return t;
}

bool valid_device_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > max_device_id) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

decode_result decode(std::span<const std::byte> input) noexcept {
  if (input.size() < header_size) {
    // A header's length and type can be checked as soon as they arrive, so garbage fails
    // fast instead of waiting for a payload that will never come.
    if (input.size() >= 3) {
      const std::size_t len = (std::to_integer<std::size_t>(input[0]) << 16) |
                              (std::to_integer<std::size_t>(input[1]) << 8) |
                              std::to_integer<std::size_t>(input[2]);
      if (len > max_payload) return fail(errc::frame_too_large, "frame length above 64 KiB");
    }
    if (input.size() >= 4 && std::to_integer<std::uint8_t>(input[3]) > max_frame_type)
      return fail(errc::protocol_error, "unknown frame type");
    return {};
  }
  reader h(input.first(header_size));
  const std::size_t len = (std::size_t{h.u16()} << 8) | h.u8();
  const auto type = h.u8();
  const auto flags = h.u8();
  const auto id = h.u32();
  if (len > max_payload) return fail(errc::frame_too_large, "frame length above 64 KiB");
  if (type > max_frame_type) return fail(errc::protocol_error, "unknown frame type");
  if (input.size() < header_size + len) return {};
  auto r = parse(static_cast<frame_type>(type), flags, id, input.subspan(header_size, len));
  if (r.status == decode_status::complete) r.consumed = header_size + len;
  return r;
}

namespace {

struct encoder {
  std::vector<std::byte>& out;

  // Writes the header with a placeholder length, runs `body`, then patches the length.
  template <class Body>
  void frame(frame_type t, std::uint8_t flags, std::uint32_t id, Body body) {
    const auto start = out.size();
    writer w(out);
    w.u24(0);
    w.u8(static_cast<std::uint8_t>(t));
    w.u8(flags);
    w.u32(id);
    body(w);
    const auto len = out.size() - start - header_size;
    assert(len <= max_payload);
    out[start] = static_cast<std::byte>(len >> 16);
    out[start + 1] = static_cast<std::byte>(len >> 8);
    out[start + 2] = static_cast<std::byte>(len);
  }

  static void message(writer& w, std::string_view m) {
    if (m.size() > max_message) m = m.substr(0, max_message);  // messages are advisory
    w.u16(m.size());
    w.bytes(m.data(), m.size());
  }

  void operator()(const hello& f) {
    assert(f.token.size() <= max_token);
    const auto flags = static_cast<std::uint8_t>((f.lanes ? flag_lanes : 0) |
                                                 (f.bulk_lane ? flag_bulk_lane : 0));
    frame(frame_type::hello, flags, 0, [&](writer& w) {
      w.u16(f.version);
      w.u8(static_cast<std::uint8_t>(f.role));
      w.u32(f.session_window);
      w.u32(f.stream_window);
      w.u16(f.token.size());
      w.bytes(f.token.data(), f.token.size());
    });
  }
  void operator()(const welcome& f) {
    frame(frame_type::welcome, f.lanes ? flag_lanes : 0, 0, [&](writer& w) {
      w.u16(f.version);
      w.u32(f.session_window);
      w.u32(f.stream_window);
      w.u32(f.keepalive_ms);
    });
  }
  void operator()(const refuse& f) {
    frame(frame_type::refuse, 0, 0, [&](writer& w) {
      w.u8(f.code);
      message(w, f.message);
    });
  }
  void operator()(const open& f) {
    // A catalog stream names no device (docs/PROTOCOL.md); every other stream a valid one.
    assert(f.proto == stream_protocol_catalog ? f.device.empty() && f.port == 0
                                              : valid_device_id(f.device));
    assert(!f.resume || parse_move_token(f.device));
    frame(frame_type::open, f.resume ? flag_resume : 0, f.stream_id, [&](writer& w) {
      w.u8(f.proto);
      w.u16(f.port);
      w.u32(f.window);
      w.u8(f.device.size());
      w.bytes(f.device.data(), f.device.size());
    });
  }
  void operator()(const open_result& f) {
    frame(frame_type::open_result, f.movable ? flag_movable : 0, f.stream_id, [&](writer& w) {
      w.u8(f.code);
      w.u32(f.window);
      message(w, f.message);
    });
  }
  void operator()(const data& f) {
    assert(f.payload.size() <= max_data_payload);
    frame(frame_type::data, f.fin ? flag_fin : 0, f.stream_id,
          [&](writer& w) { w.bytes(f.payload.data(), f.payload.size()); });
  }
  void operator()(const datagram& f) {
    assert(f.payload.size() <= max_datagram);
    frame(frame_type::datagram, 0, f.stream_id,
          [&](writer& w) { w.bytes(f.payload.data(), f.payload.size()); });
  }
  void operator()(const move& f) {
    frame(frame_type::move, 0, f.stream_id,
          [&](writer& w) { w.bytes(f.token.data(), f.token.size()); });
  }
  void operator()(const window_update& f) {
    frame(frame_type::window_update, 0, f.stream_id, [&](writer& w) { w.u32(f.increment); });
  }
  void operator()(const reset& f) {
    frame(frame_type::reset, 0, f.stream_id, [&](writer& w) {
      w.u8(f.code);
      message(w, f.message);
    });
  }
  void operator()(const ping& f) {
    frame(frame_type::ping, f.ack ? flag_ack : 0, 0, [&](writer& w) { w.u64(f.opaque); });
  }
  void operator()(const goaway& f) {
    frame(frame_type::goaway, 0, 0, [&](writer& w) {
      w.u32(f.last_stream_id);
      w.u8(f.code);
      message(w, f.message);
    });
  }
};

}  // namespace

void encode(const frame& f, std::vector<std::byte>& out) { std::visit(encoder{out}, f); }

}  // namespace tether::wire
