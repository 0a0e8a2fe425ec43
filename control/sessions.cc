#include "control/sessions.h"

#include <signal.h>

#include "sys/error.h"
#include "sys/random.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

json Sessions::to_api(const Session& s) {
  return {{"id", s.id},
          {"command", s.command},
          {"tty", s.tty},
          {"state", s.exited ? "exited" : "running"},
          {"exit_code", s.exited ? json(s.status.shell_code()) : json(nullptr)},
          {"signal", s.exited && s.status.signal ? json(s.status.signal) : json(nullptr)},
          {"started_at", sys::format_time(s.started_at)},
          {"ended_at", s.ended_at ? json(sys::format_time(s.ended_at)) : json(nullptr)}};
}

Sessions::Session& Sessions::find(const std::string& box, const std::string& id) {
  return const_cast<Session&>(std::as_const(*this).find(box, id));
}

const Sessions::Session& Sessions::find(const std::string& box, const std::string& id) const {
  auto b = boxes_.find(box);
  if (b != boxes_.end()) {
    if (auto s = b->second.find(id); s != b->second.end()) return *s->second;
  }
  throw not_found("session " + id + " not found in sandbox " + box);
}

json Sessions::add(const std::string& box, std::shared_ptr<node::Process> process,
                   std::vector<std::string> command, bool tty, std::string id, int64_t started_at) {
  auto s = std::make_shared<Session>();
  s->id = id.empty() ? "se-" + sys::random_base32(12) : std::move(id);
  s->command = std::move(command);
  s->tty = tty;
  s->process = std::move(process);
  s->started_at = started_at ? started_at : sys::now_ms();
  s->changed = std::make_unique<node::Notifier>(executor_);
  boxes_[box][s->id] = s;
  asio::co_spawn(executor_, pump(box, s->id), asio::detached);
  return to_api(*s);
}

asio::awaitable<void> Sessions::pump(std::string box, std::string id) {
  // Holds the session while it runs: removing it from the map does not end the pump early.
  std::shared_ptr<Session> s;
  {
    auto b = boxes_.find(box);
    if (b == boxes_.end() || !b->second.count(id)) co_return;
    s = b->second[id];
  }
  try {
    for (;;) {
      node::ProcessEvent ev = co_await s->process->next();
      if (ev.kind == node::ProcessEvent::Kind::exit) {
        s->exited = true;
        s->status = ev.status;
        break;
      }
      s->log += ev.data;
      if (s->log.size() > kKeptOutput) {
        size_t drop = s->log.size() - kKeptOutput;
        s->log.erase(0, drop);
        s->log_start += drop;
      }
      s->changed->notify();
    }
  } catch (const Error&) {
    // The box went away under the session.
    s->exited = true;
    s->status = sys::ExitStatus{.code = -1};
  }
  s->ended_at = sys::now_ms();
  s->process.reset();
  s->changed->notify();
}

json Sessions::get(const std::string& box, const std::string& id) const {
  return to_api(find(box, id));
}

json Sessions::list(const std::string& box, size_t limit, const std::string& cursor) const {
  json items = json::array();
  std::string next;
  auto b = boxes_.find(box);
  if (b != boxes_.end()) {
    for (auto it = cursor.empty() ? b->second.begin() : b->second.upper_bound(cursor);
         it != b->second.end(); ++it) {
      if (items.size() == limit) {
        next = items.back()["id"];
        break;
      }
      items.push_back(to_api(*it->second));
    }
  }
  return {{"items", items}, {"next_cursor", next.empty() ? json(nullptr) : json(next)}};
}

Sessions::Output Sessions::output(const std::string& box, const std::string& id,
                                  uint64_t offset) const {
  const Session& s = find(box, id);
  uint64_t end = s.log_start + s.log.size();
  uint64_t from = std::max(offset, s.log_start);
  Output out;
  if (from < end) out.data = s.log.substr(from - s.log_start);
  out.next_offset = std::max(end, offset);
  out.ended = s.exited;
  return out;
}

asio::awaitable<void> Sessions::wait_output(const std::string& box, const std::string& id,
                                            uint64_t offset) {
  auto b = boxes_.find(box);
  if (b == boxes_.end() || !b->second.count(id)) co_return;
  std::shared_ptr<Session> s = b->second[id];
  while (!s->exited && s->log_start + s->log.size() <= offset) co_await s->changed->wait();
}

asio::awaitable<void> Sessions::input(const std::string& box, const std::string& id,
                                      std::string data, bool eof) {
  Session& s = find(box, id);
  if (s.exited || !s.process) throw Error(ErrorCode::conflict, "session " + id + " has exited");
  auto process = s.process;
  if (!data.empty()) co_await process->write_stdin(data);
  if (eof) process->close_stdin();
}

asio::awaitable<void> Sessions::signal(const std::string& box, const std::string& id, int sig) {
  Session& s = find(box, id);
  if (s.exited || !s.process) throw Error(ErrorCode::conflict, "session " + id + " has exited");
  auto process = s.process;
  co_await process->signal(sig, true);
}

void Sessions::remove(const std::string& box, const std::string& id) {
  Session& s = find(box, id);
  if (!s.exited && s.process) {
    asio::co_spawn(executor_, s.process->signal(SIGKILL, true), asio::detached);
  }
  boxes_[box].erase(id);
}

void Sessions::forget_box(const std::string& box) { boxes_.erase(box); }

}  // namespace pitbox::control
