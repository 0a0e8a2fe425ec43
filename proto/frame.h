// The box protocol's framing: {u32 length, u8 type, u32 stream, payload}, big-endian, where
// length counts the payload bytes only. Spoken over one stream socket per box.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pitbox::proto {

constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 9;
// No frame may carry more; a peer that sends a larger one is broken or hostile.
constexpr uint32_t kMaxPayload = 1u << 20;
// Process output and file bytes travel in chunks of at most this size.
constexpr uint32_t kDataChunk = 64u << 10;
// Bytes a sender may have in flight on one stream before the receiver grants more.
constexpr uint32_t kDefaultWindow = 256u << 10;
constexpr uint32_t kMaxWindow = 16u << 20;
// Init keeps the node's end of a spare channel at this fd. A node that lost the channel (a
// restarted daemon) takes it with pidfd_getfd and says hello on it: it becomes the channel.
constexpr int kSpareChannelFd = 100;

enum class FrameType : uint8_t {
  hello = 1,     // JSON, both ways, first frame each way: version and features
  request = 2,   // JSON, node -> init: {"op": ...}; the stream is the request's id
  response = 3,  // JSON, init -> node: {"ok": true, ...} or {"ok": false, "error": {...}}
  exit = 4,      // JSON, init -> node: a spawned process ended (after all of its output)
  stdin = 5,     // bytes, node -> init; an empty payload closes the process's stdin
  stdout = 6,    // bytes, init -> node; an empty payload means end of output
  stderr = 7,    // bytes, init -> node; an empty payload means end of output
  data = 8,      // bytes of a file, either way, on the request's stream; empty = end
  window = 9,    // u32: the receiver grants this many more bytes on the stream
};

std::string_view to_string(FrameType type);
bool is_known(uint8_t type);

struct Frame {
  FrameType type;
  uint32_t stream;
  std::string payload;
};

// Appends one encoded frame to `out`.
void append_frame(std::string& out, FrameType type, uint32_t stream, std::string_view payload);
std::string encode_frame(FrameType type, uint32_t stream, std::string_view payload);
std::string encode_window(uint32_t increment);
// The increment in a window frame's payload, or nullopt when it is malformed.
std::optional<uint32_t> decode_window(std::string_view payload);

// Turns a byte stream that arrives in pieces of any size back into frames.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_payload = kMaxPayload) : max_payload_(max_payload) {}

  void feed(std::string_view bytes);
  // The next complete frame, if one has arrived. Throws Error(invalid_argument) when the
  // stream is corrupt: a frame above the size limit or of an unknown type. After that the
  // decoder stays failed.
  std::optional<Frame> next();
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  uint32_t max_payload_;
  std::string buf_;
  size_t pos_ = 0;
  bool failed_ = false;
};

}  // namespace pitbox::proto
