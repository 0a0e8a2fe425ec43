// Health, the spec, metrics, keys and the audit log.
#include "api/routes.h"
#include "sys/text.h"

namespace pitbox::api {

namespace {

json audit_to_api(const control::AuditEntry& e) {
  return {{"id", std::to_string(e.id)},
          {"time", sys::format_time(e.time_ms)},
          {"key_id", e.key_id.empty() ? json(nullptr) : json(e.key_id)},
          {"action", e.action},
          {"target", e.target},
          {"status", e.status},
          {"error", e.error.empty() ? json(nullptr) : json(e.error)}};
}

std::string render_metrics(Services& s) {
  std::string out;
  std::map<std::string, int> by_state;
  for (auto st : {control::State::creating, control::State::started, control::State::stopping,
                  control::State::stopped, control::State::starting, control::State::error,
                  control::State::destroying, control::State::paused}) {
    by_state[std::string(control::to_string(st))] = 0;
  }
  auto all = s.sandboxes.all();
  for (const auto& sb : all) by_state[std::string(control::to_string(sb.state))]++;
  out += "# HELP pitbox_sandboxes Sandboxes by state.\n# TYPE pitbox_sandboxes gauge\n";
  for (const auto& [state, n] : by_state) {
    out += "pitbox_sandboxes{state=\"" + state + "\"} " + std::to_string(n) + "\n";
  }
  out +=
      "# HELP pitbox_pool_ready Started boxes kept ready for creates.\n"
      "# TYPE pitbox_pool_ready gauge\npitbox_pool_ready " +
      std::to_string(s.sandboxes.pool_ready()) + "\n";
  out += s.metrics.create_seconds.render("pitbox_sandbox_create_seconds",
                                         "Time from a create request to a sandbox ready to exec.");
  out += s.metrics.exec_seconds.render("pitbox_exec_seconds",
                                       "Time of one-shot execs, from request to exit.");
  out +=
      "# HELP pitbox_sandbox_operation_seconds Time of sandbox operations (pause, resume, "
      "resize, snapshot, restore, fork, archive, unarchive).\n"
      "# TYPE pitbox_sandbox_operation_seconds histogram\n";
  for (const auto& [op, h] : s.metrics.operations) {
    out += h.render("pitbox_sandbox_operation_seconds", "",
                    "op=\"" + control::prometheus_label(op) + "\"");
  }
  out +=
      "# HELP pitbox_http_responses_total HTTP responses by status.\n"
      "# TYPE pitbox_http_responses_total counter\n";
  for (const auto& [code, n] : s.metrics.http_responses) {
    out += "pitbox_http_responses_total{code=\"" + std::to_string(code) + "\"} " +
           std::to_string(n) + "\n";
  }
  std::string cpu =
      "# HELP pitbox_sandbox_cpu_seconds_total CPU time used by a sandbox.\n"
      "# TYPE pitbox_sandbox_cpu_seconds_total counter\n";
  std::string mem =
      "# HELP pitbox_sandbox_memory_bytes Memory a sandbox uses now.\n"
      "# TYPE pitbox_sandbox_memory_bytes gauge\n";
  std::string pids =
      "# HELP pitbox_sandbox_pids Processes and threads in a sandbox.\n"
      "# TYPE pitbox_sandbox_pids gauge\n";
  for (const auto& sb : all) {
    if (sb.state != control::State::started) continue;
    sys::CgroupStats st;
    try {
      st = s.sandboxes.stats(sb.id);
    } catch (const std::exception&) {
      continue;
    }
    std::string labels =
        "{id=\"" + sb.id + "\",name=\"" + control::prometheus_label(sb.spec.name) + "\"} ";
    char seconds[64];
    std::snprintf(seconds, sizeof seconds, "%.6f", static_cast<double>(st.cpu_usage_ns) / 1e9);
    cpu += "pitbox_sandbox_cpu_seconds_total" + labels + seconds + "\n";
    mem += "pitbox_sandbox_memory_bytes" + labels + std::to_string(st.memory_bytes) + "\n";
    pids += "pitbox_sandbox_pids" + labels + std::to_string(st.pids) + "\n";
  }
  return out + cpu + mem + pids;
}

}  // namespace

void add_admin_routes(Router& router, Services& services) {
  Services* s = &services;
  using V = http::verb;
  router.add(V::get, "/v1/health", Access::open, [](Request& r) -> asio::awaitable<void> {
    json answer = {{"status", "ok"}, {"version", PITBOX_VERSION}};
    co_await send_json(r, 200, answer);
  });
  router.add(V::get, "/v1/openapi.json", Access::user, [](Request& r) -> asio::awaitable<void> {
    co_await r.finish_body();
    http::response<http::string_body> res{http::status::ok, r.head.version()};
    common_headers(res, r);
    res.set(http::field::content_type, "application/json");
    res.body() = std::string(openapi_json());
    res.prepare_payload();
    r.status = 200;
    r.headers_sent = true;
    co_await http::async_write(r.stream, res, asio::use_awaitable);
  });
  router.add(V::get, "/metrics", Access::user, [s](Request& r) -> asio::awaitable<void> {
    std::string text = render_metrics(*s);
    co_await r.finish_body();
    http::response<http::string_body> res{http::status::ok, r.head.version()};
    common_headers(res, r);
    res.set(http::field::content_type, "text/plain; version=0.0.4");
    res.body() = std::move(text);
    res.prepare_payload();
    r.status = 200;
    r.headers_sent = true;
    co_await http::async_write(r.stream, res, asio::use_awaitable);
  });
  router.add(V::post, "/v1/keys", Access::admin, [s](Request& r) -> asio::awaitable<void> {
    json body = co_await r.read_json();
    json key = s->keys.create(body);
    r.target = key["id"];
    co_await send_json(r, 201, key);
  });
  router.add(V::get, "/v1/keys", Access::admin, [s](Request& r) -> asio::awaitable<void> {
    json page = s->keys.list(static_cast<size_t>(r.query_int("limit", 100, 1, 1000)),
                             r.query_value("cursor"));
    co_await send_json(r, 200, page);
  });
  router.add(V::delete_, "/v1/keys/{id}", Access::admin, [s](Request& r) -> asio::awaitable<void> {
    std::string id = r.params.at("id");
    if (r.key && r.key->id == id) {
      throw Error(ErrorCode::conflict, "a key cannot revoke itself (" + id + ")");
    }
    s->keys.remove(id);
    co_await send_empty(r, 204);
  });
  router.add(V::get, "/v1/audit", Access::admin, [s](Request& r) -> asio::awaitable<void> {
    size_t limit = static_cast<size_t>(r.query_int("limit", 100, 1, 1000));
    int64_t before = r.query_int("cursor", 0, 0, INT64_MAX);
    auto entries = s->store.list_audit(before, limit + 1);
    json items = json::array();
    std::string next;
    for (size_t i = 0; i < entries.size() && i < limit; ++i) {
      items.push_back(audit_to_api(entries[i]));
    }
    if (entries.size() > limit) next = std::to_string(entries[limit - 1].id);
    co_await send_json(r, 200, page_json(std::move(items), next));
  });
}

}  // namespace pitbox::api
