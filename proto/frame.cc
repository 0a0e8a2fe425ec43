#include "proto/frame.h"

#include "sys/error.h"

namespace pitbox::proto {
namespace {

void put_u32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

uint32_t get_u32(const char* p) {
  auto b = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

}  // namespace

std::string_view to_string(FrameType type) {
  switch (type) {
    case FrameType::hello:
      return "hello";
    case FrameType::request:
      return "request";
    case FrameType::response:
      return "response";
    case FrameType::exit:
      return "exit";
    case FrameType::stdin:
      return "stdin";
    case FrameType::stdout:
      return "stdout";
    case FrameType::stderr:
      return "stderr";
    case FrameType::data:
      return "data";
    case FrameType::window:
      return "window";
  }
  return "unknown";
}

bool is_known(uint8_t type) { return type >= 1 && type <= 9; }

void append_frame(std::string& out, FrameType type, uint32_t stream, std::string_view payload) {
  out.reserve(out.size() + kHeaderSize + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size()));
  out.push_back(static_cast<char>(type));
  put_u32(out, stream);
  out.append(payload);
}

std::string encode_frame(FrameType type, uint32_t stream, std::string_view payload) {
  std::string out;
  append_frame(out, type, stream, payload);
  return out;
}

std::string encode_window(uint32_t increment) {
  std::string out;
  put_u32(out, increment);
  return out;
}

std::optional<uint32_t> decode_window(std::string_view payload) {
  if (payload.size() != 4) return std::nullopt;
  return get_u32(payload.data());
}

void FrameDecoder::feed(std::string_view bytes) {
  // Drop what has been consumed before growing the buffer.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ > (64u << 10))) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
}

std::optional<Frame> FrameDecoder::next() {
  if (failed_) throw invalid_argument("box protocol: the stream is already corrupt");
  if (buffered() < kHeaderSize) return std::nullopt;
  const char* h = buf_.data() + pos_;
  uint32_t length = get_u32(h);
  auto type = static_cast<uint8_t>(h[4]);
  if (length > max_payload_) {
    failed_ = true;
    throw invalid_argument("box protocol: frame of " + std::to_string(length) +
                           " bytes is above the limit of " + std::to_string(max_payload_));
  }
  if (!is_known(type)) {
    failed_ = true;
    throw invalid_argument("box protocol: unknown frame type " + std::to_string(type));
  }
  if (buffered() < kHeaderSize + length) return std::nullopt;
  Frame f{static_cast<FrameType>(type), get_u32(h + 5), buf_.substr(pos_ + kHeaderSize, length)};
  pos_ += kHeaderSize + length;
  return f;
}

}  // namespace pitbox::proto
