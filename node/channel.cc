#include "node/channel.h"

#include <algorithm>
#include <boost/asio/redirect_error.hpp>

namespace pitbox::node {

using nlohmann::json;
using proto::FrameType;

asio::awaitable<void> Notifier::wait() {
  boost::system::error_code ec;
  co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

// ---------------------------------------------------------------------------------------------

Process::Process(std::shared_ptr<Channel> channel, uint32_t stream)
    : channel_(std::move(channel)), stream_(stream), changed_(channel_->ex_) {}

asio::awaitable<ProcessEvent> Process::next() {
  while (events_.empty()) {
    if (exited_) co_return ProcessEvent{ProcessEvent::Kind::exit, {}, exit_status_};
    if (channel_->error_) throw *channel_->error_;
    co_await changed_.wait();
  }
  ProcessEvent ev = std::move(events_.front());
  events_.pop_front();
  if (ev.kind != ProcessEvent::Kind::exit && !ev.data.empty()) {
    auto n = static_cast<uint32_t>(ev.data.size());
    output_allowed_ += n;
    channel_->send(FrameType::window, stream_, proto::encode_window(n));
  }
  co_return ev;
}

asio::awaitable<void> Process::write_stdin(std::string_view data) {
  while (!data.empty()) {
    while (stdin_credit_ == 0 && !exited_) {
      channel_->check_open();
      co_await changed_.wait();
    }
    if (exited_) co_return;  // nobody left to read it
    size_t n = std::min<size_t>({data.size(), stdin_credit_, proto::kDataChunk});
    channel_->send(FrameType::stdin, stream_, data.substr(0, n));
    stdin_credit_ -= static_cast<uint32_t>(n);
    data.remove_prefix(n);
  }
}

void Process::close_stdin() {
  if (!exited_ && !channel_->error_) channel_->send(FrameType::stdin, stream_, "");
}

// (GCC 12 cannot keep braced JSON literals in a coroutine frame: they are built out here.)
namespace {
json signal_request(uint32_t target, int sig, bool group) {
  return {{"op", "signal"}, {"target", target}, {"signal", sig}, {"group", group}};
}
json resize_request(uint32_t target, uint16_t rows, uint16_t cols) {
  return {{"op", "resize"}, {"target", target}, {"rows", rows}, {"cols", cols}};
}
}  // namespace

asio::awaitable<void> Process::signal(int sig, bool group) {
  if (exited_) co_return;
  co_await channel_->call(signal_request(stream_, sig, group));
}

asio::awaitable<void> Process::resize(uint16_t rows, uint16_t cols) {
  if (exited_) co_return;
  co_await channel_->call(resize_request(stream_, rows, cols));
}

// ---------------------------------------------------------------------------------------------

FileReader::FileReader(std::shared_ptr<Channel> channel, uint32_t stream, uint32_t window)
    : channel_(std::move(channel)), stream_(stream), allowed_(window), changed_(channel_->ex_) {}

FileReader::~FileReader() {
  channel_->readers_.erase(stream_);
  // Given up before the end: an empty data frame tells init to stop reading.
  if (!ended_) channel_->send(FrameType::data, stream_, "");
}

asio::awaitable<std::optional<std::string>> FileReader::next() {
  while (chunks_.empty()) {
    if (ended_) co_return std::nullopt;
    channel_->check_open();
    co_await changed_.wait();
  }
  std::string chunk = std::move(chunks_.front());
  chunks_.pop_front();
  auto n = static_cast<uint32_t>(chunk.size());
  allowed_ += n;
  channel_->send(FrameType::window, stream_, proto::encode_window(n));
  co_return chunk;
}

FileWriter::FileWriter(std::shared_ptr<Channel> channel, uint32_t stream)
    : channel_(std::move(channel)),
      stream_(stream),
      credit_(proto::kDefaultWindow),
      changed_(channel_->ex_) {}

FileWriter::~FileWriter() {
  end();
  channel_->writers_.erase(stream_);
}

void FileWriter::end() {
  if (ended_) return;
  ended_ = true;
  channel_->send(FrameType::data, stream_, "");
}

asio::awaitable<void> FileWriter::write(std::string_view data) {
  while (!data.empty()) {
    // init answers before the end only when the write failed.
    if (channel_->responses_.count(stream_)) {
      end();
      proto::unwrap_response(co_await channel_->response(stream_));
    }
    if (credit_ == 0) {
      channel_->check_open();
      co_await changed_.wait();
      continue;
    }
    size_t n = std::min<size_t>({data.size(), credit_, proto::kDataChunk});
    channel_->send(FrameType::data, stream_, data.substr(0, n));
    credit_ -= static_cast<uint32_t>(n);
    data.remove_prefix(n);
  }
}

asio::awaitable<uint64_t> FileWriter::finish() {
  end();
  json r = proto::unwrap_response(co_await channel_->response(stream_));
  co_return r.value("written", uint64_t{0});
}

// ---------------------------------------------------------------------------------------------

Channel::Channel(const asio::any_io_executor& ex, sys::UniqueFd fd)
    : ex_(ex), socket_(ex, fd.release()), changed_(ex) {}

Channel::~Channel() {
  boost::system::error_code ec;
  socket_.close(ec);
}

void Channel::check_open() const {
  if (error_) throw *error_;
}

uint32_t Channel::next_stream() {
  if (++last_stream_ == 0) ++last_stream_;
  return last_stream_;
}

void Channel::close() { fail(Error(ErrorCode::unavailable, "the box's channel was closed")); }

void Channel::fail(const Error& e) {
  if (!error_) error_ = e;
  boost::system::error_code ec;
  socket_.close(ec);
  changed_.notify();
  for (auto& [stream, weak] : processes_) {
    if (auto p = weak.lock()) p->changed_.notify();
  }
  for (auto& [stream, weak] : readers_) {
    if (auto r = weak.lock()) r->changed_.notify();
  }
  for (auto& [stream, weak] : writers_) {
    if (auto w = weak.lock()) w->changed_.notify();
  }
}

void Channel::send(FrameType type, uint32_t stream, std::string_view payload) {
  if (error_) return;
  proto::append_frame(outbox_, type, stream, payload);
  if (!writing_) start_write();
}

void Channel::start_write() {
  writing_ = true;
  inflight_.swap(outbox_);
  asio::async_write(socket_, asio::buffer(inflight_),
                    [self = shared_from_this()](boost::system::error_code ec, size_t) {
                      self->writing_ = false;
                      self->inflight_.clear();
                      if (ec) {
                        self->fail(Error(ErrorCode::unavailable,
                                         "writing to the box's channel: " + ec.message()));
                      } else if (!self->outbox_.empty()) {
                        self->start_write();
                      }
                    });
}

asio::awaitable<void> Channel::read_loop() {
  auto self = shared_from_this();
  // Left uninitialised: a page costs a fault only once a read reaches it.
  constexpr size_t kBufferSize = 64 * 1024;
  std::unique_ptr<char[]> buf(new char[kBufferSize]);
  try {
    for (;;) {
      // End of stream and cancellation are ordinary here: no exceptions for them (the first
      // exception of a process costs a scan of its unwind tables).
      boost::system::error_code ec;
      size_t n = co_await socket_.async_read_some(asio::buffer(buf.get(), kBufferSize),
                                                  asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        fail(Error(ErrorCode::unavailable,
                   ec == asio::error::eof ? "the box's init closed its channel"
                                          : "reading from the box's channel: " + ec.message()));
        co_return;
      }
      decoder_.feed(std::string_view(buf.get(), n));
      while (auto frame = decoder_.next()) dispatch(*frame);
    }
  } catch (const Error& e) {
    fail(Error(ErrorCode::unavailable, "the box's init broke the protocol: " + e.message()));
  } catch (const json::exception& e) {
    fail(Error(ErrorCode::unavailable, std::string("the box's init sent bad JSON: ") + e.what()));
  }
}

void Channel::dispatch(proto::Frame& frame) {
  auto process = [&]() -> std::shared_ptr<Process> {
    auto it = processes_.find(frame.stream);
    return it == processes_.end() ? nullptr : it->second.lock();
  };
  switch (frame.type) {
    case FrameType::hello: {
      auto hello = proto::parse_payload(frame.payload, "hello").get<proto::Hello>();
      if (hello.version != proto::kVersion) {
        throw invalid_argument("it speaks protocol version " + std::to_string(hello.version) +
                               ", not " + std::to_string(proto::kVersion));
      }
      // Streams of processes init already runs (after a reattach) are taken.
      for (const auto& p : hello.processes) last_stream_ = std::max(last_stream_, p.stream);
      hello_ = std::move(hello);
      changed_.notify();
      return;
    }
    case FrameType::response:
      // Only answers to requests we made: a hostile init must not make us store anything else.
      if (!pending_.erase(frame.stream)) {
        throw invalid_argument("response on stream " + std::to_string(frame.stream) +
                               ", which has no request waiting");
      }
      responses_[frame.stream] = proto::parse_payload(frame.payload, "response");
      changed_.notify();
      if (auto it = writers_.find(frame.stream); it != writers_.end()) {
        if (auto w = it->second.lock()) w->changed_.notify();
      }
      return;
    case FrameType::stdout:
    case FrameType::stderr:
      if (auto p = process()) {
        if (frame.payload.empty()) return;  // end of that stream; the exit follows
        // What is queued for a process is bounded by the window we granted it.
        if (frame.payload.size() > p->output_allowed_) {
          throw invalid_argument("output on stream " + std::to_string(frame.stream) +
                                 " beyond the window it was granted");
        }
        p->output_allowed_ -= static_cast<uint32_t>(frame.payload.size());
        p->events_.push_back({frame.type == FrameType::stdout ? ProcessEvent::Kind::stdout
                                                              : ProcessEvent::Kind::stderr,
                              std::move(frame.payload),
                              {}});
        p->changed_.notify();
      }
      return;
    case FrameType::exit:
      if (auto p = process()) {
        p->exited_ = true;
        p->exit_status_ = proto::exit_from_json(proto::parse_payload(frame.payload, "exit"));
        p->events_.push_back({ProcessEvent::Kind::exit, {}, p->exit_status_});
        p->changed_.notify();
      }
      processes_.erase(frame.stream);
      return;
    case FrameType::window: {
      auto inc = proto::decode_window(frame.payload);
      if (!inc) throw invalid_argument("malformed window frame");
      auto grow = [&](uint32_t& credit) {
        credit =
            static_cast<uint32_t>(std::min<uint64_t>(uint64_t{credit} + *inc, proto::kMaxWindow));
      };
      if (auto p = process()) {
        grow(p->stdin_credit_);
        p->changed_.notify();
      } else if (auto it = writers_.find(frame.stream); it != writers_.end()) {
        if (auto w = it->second.lock()) {
          grow(w->credit_);
          w->changed_.notify();
        }
      }
      return;
    }
    case FrameType::data: {
      auto it = readers_.find(frame.stream);
      auto r = it == readers_.end() ? nullptr : it->second.lock();
      if (!r) return;  // a reader that was given up
      if (frame.payload.empty()) {
        r->ended_ = true;
      } else {
        if (frame.payload.size() > r->allowed_) {
          throw invalid_argument("file data on stream " + std::to_string(frame.stream) +
                                 " beyond the window it was granted");
        }
        r->allowed_ -= static_cast<uint32_t>(frame.payload.size());
        r->chunks_.push_back(std::move(frame.payload));
      }
      r->changed_.notify();
      return;
    }
    case FrameType::request:
    case FrameType::stdin:
      throw invalid_argument(std::string("init sent a ") +
                             std::string(proto::to_string(frame.type)) + " frame");
  }
}

void Channel::start() {
  if (reading_) return;
  reading_ = true;
  asio::co_spawn(ex_, read_loop(), asio::detached);
  send(FrameType::hello, 0,
       json(proto::Hello{proto::kVersion, std::string("pitbox/") + PITBOX_VERSION, {}}).dump());
}

asio::awaitable<proto::Hello> Channel::handshake() {
  start();
  while (!hello_) {
    check_open();
    co_await changed_.wait();
  }
  co_return *hello_;
}

asio::awaitable<json> Channel::response(uint32_t stream) {
  for (;;) {
    if (auto it = responses_.find(stream); it != responses_.end()) {
      json r = std::move(it->second);
      responses_.erase(it);
      co_return r;
    }
    check_open();
    co_await changed_.wait();
  }
}

asio::awaitable<json> Channel::call(json request) {
  check_open();
  uint32_t stream = next_stream();
  pending_.insert(stream);
  send(FrameType::request, stream, request.dump());
  co_return proto::unwrap_response(co_await response(stream));
}

asio::awaitable<std::shared_ptr<Process>> Channel::spawn(proto::SpawnRequest request) {
  check_open();
  if (request.window == 0) request.window = proto::kDefaultWindow;
  uint32_t stream = next_stream();
  auto p = std::make_shared<Process>(shared_from_this(), stream);
  p->output_allowed_ = request.window;
  processes_[stream] = p;
  pending_.insert(stream);
  send(FrameType::request, stream, json(request).dump());
  json reply;
  try {
    reply = proto::unwrap_response(co_await response(stream));
  } catch (...) {
    processes_.erase(stream);
    throw;
  }
  auto r = reply.get<proto::SpawnReply>();
  p->pid_ = r.pid;
  p->stdin_credit_ = r.stdin_window;
  co_return p;
}

std::shared_ptr<Process> Channel::adopt(const proto::ProcessInfo& info, uint32_t window) {
  auto p = std::make_shared<Process>(shared_from_this(), info.stream);
  p->pid_ = info.pid;
  p->stdin_credit_ = proto::kDefaultWindow;
  p->output_allowed_ = window;
  processes_[info.stream] = p;
  send(FrameType::window, info.stream, proto::encode_window(window));
  return p;
}

namespace {
json read_request(const std::string& path, uint64_t offset, int64_t length) {
  json r = {{"op", "read"}, {"path", path}, {"window", proto::kDefaultWindow}};
  if (offset) r["offset"] = offset;
  if (length >= 0) r["length"] = length;
  return r;
}
json write_request(const std::string& path, std::optional<uint32_t> mode, bool append) {
  json r = {{"op", "write"}, {"path", path}};
  if (mode) r["mode"] = *mode;
  if (append) r["append"] = true;
  return r;
}
json shutdown_request(std::chrono::milliseconds grace) {
  return {{"op", "shutdown"}, {"grace_ms", grace.count()}};
}
}  // namespace

asio::awaitable<std::shared_ptr<FileReader>> Channel::read_file(const std::string& path,
                                                                uint64_t offset, int64_t length) {
  check_open();
  uint32_t stream = next_stream();
  auto r = std::make_shared<FileReader>(shared_from_this(), stream, proto::kDefaultWindow);
  readers_[stream] = r;
  pending_.insert(stream);
  send(FrameType::request, stream, read_request(path, offset, length).dump());
  json info = proto::unwrap_response(co_await response(stream));
  r->info_ = info.get<proto::FileInfo>();
  co_return r;
}

asio::awaitable<std::shared_ptr<FileWriter>> Channel::write_file(const std::string& path,
                                                                 std::optional<uint32_t> mode,
                                                                 bool append) {
  check_open();
  uint32_t stream = next_stream();
  auto w = std::make_shared<FileWriter>(shared_from_this(), stream);
  writers_[stream] = w;
  pending_.insert(stream);  // answered at the end, or at once if the file cannot be opened
  send(FrameType::request, stream, write_request(path, mode, append).dump());
  co_return w;
}

asio::awaitable<void> Channel::shutdown(std::chrono::milliseconds grace) {
  co_await call(shutdown_request(grace));
}

}  // namespace pitbox::node
