// Images (list, inspect, tag, remove, prune, import, export), build contexts and builds.
#include <fcntl.h>
#include <unistd.h>

#include "api/routes.h"
#include "sys/fd.h"
#include "sys/fs.h"

namespace pitbox::api {

namespace {

using control::Build;

class ImageRoutes {
 public:
  explicit ImageRoutes(Services& s) : s_(s) {}

  static void add(Router& router, const std::shared_ptr<ImageRoutes>& self) {
    auto bind = [self](asio::awaitable<void> (ImageRoutes::*fn)(Request&)) {
      return [self, fn](Request& r) { return (self.get()->*fn)(r); };
    };
    using V = http::verb;
    router.add(V::get, "/v1/images", Access::user, bind(&ImageRoutes::list));
    router.add(V::post, "/v1/images/import", Access::user, bind(&ImageRoutes::import));
    router.add(V::post, "/v1/images/prune", Access::admin, bind(&ImageRoutes::prune));
    router.add(V::post, "/v1/images/base", Access::admin, bind(&ImageRoutes::build_base));
    router.add(V::get, "/v1/images/{ref}", Access::user, bind(&ImageRoutes::get));
    router.add(V::delete_, "/v1/images/{ref}", Access::user, bind(&ImageRoutes::remove));
    router.add(V::post, "/v1/images/{ref}/tag", Access::user, bind(&ImageRoutes::tag));
    router.add(V::get, "/v1/images/{ref}/export", Access::user, bind(&ImageRoutes::export_));
    router.add(V::post, "/v1/build-contexts", Access::user, bind(&ImageRoutes::context));
    router.add(V::post, "/v1/builds", Access::user, bind(&ImageRoutes::build));
    router.add(V::get, "/v1/builds", Access::user, bind(&ImageRoutes::builds));
    router.add(V::get, "/v1/builds/{id}", Access::user, bind(&ImageRoutes::build_get));
    router.add(V::get, "/v1/builds/{id}/logs", Access::user, bind(&ImageRoutes::build_logs));
  }

 private:
  control::Images& images() { return s_.images; }

  // The request body in a file of its own under the image store's work directory (removed by
  // the caller with the directory).
  asio::awaitable<std::string> body_to_file(Request& r, const std::string& dir) {
    std::string path = dir + "/upload";
    sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw_errno("create " + path);
    int out = fd.get();
    co_await r.read_body_stream([out](std::string_view data) -> asio::awaitable<void> {
      if (!sys::write_all(out, data)) throw_errno("storing the upload");
      co_return;
    });
    co_return path;
  }

  // One page of `all` (in its order) after the item whose id is the `cursor` parameter.
  template <typename T, typename Describe>
  static json page_of(const Request& r, const std::vector<T>& all, std::string (*id_of)(const T&),
                      Describe describe) {
    size_t limit = static_cast<size_t>(r.query_int("limit", 100, 1, 1000));
    std::string cursor = r.query_value("cursor");
    size_t i = 0;
    if (!cursor.empty()) {
      while (i < all.size() && id_of(all[i]) != cursor) ++i;
      if (i == all.size()) throw invalid_argument("invalid cursor \"" + cursor + "\"");
      ++i;
    }
    json items = json::array();
    for (; i < all.size() && items.size() < limit; ++i) items.push_back(describe(all[i]));
    std::string next = i < all.size() && !items.empty() ? id_of(all[i - 1]) : "";
    return page_json(std::move(items), next);
  }

  asio::awaitable<void> list(Request& r) {
    auto all = co_await images().list();
    json page = page_of<storage::ImageInfo>(
        r, all, [](const storage::ImageInfo& i) { return i.id; },
        [](const storage::ImageInfo& i) { return i.to_json(); });
    co_await send_json(r, 200, page);
  }

  asio::awaitable<void> get(Request& r) {
    std::string ref = r.params.at("ref");
    auto info = co_await images().inspect(ref);
    r.target = info.id;
    json body = info.to_json();
    co_await send_json(r, 200, body);
  }

  asio::awaitable<void> remove(Request& r) {
    std::string ref = r.params.at("ref");
    auto removed = co_await images().remove(ref);
    r.target = r.params.at("ref");
    json body = {{"untagged", removed.untagged}, {"deleted", removed.deleted}};
    co_await send_json(r, 200, body);
  }

  asio::awaitable<void> tag(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"tag"});
    if (!body.contains("tag") || !body["tag"].is_string()) {
      throw invalid_argument("\"tag\" is required: the new name, like \"myimage:1\"",
                             {{"field", "tag"}});
    }
    std::string ref = r.params.at("ref");
    std::string new_tag = body["tag"].get<std::string>();
    auto info = co_await images().tag(ref, new_tag);
    r.target = info.id;
    json answer = info.to_json();
    co_await send_json(r, 200, answer);
  }

  asio::awaitable<void> prune(Request& r) {
    auto pruned = co_await images().prune();
    json body = {{"deleted", pruned.images}, {"layers", pruned.layers}, {"bytes", pruned.bytes}};
    co_await send_json(r, 200, body);
  }

  asio::awaitable<void> import(Request& r) {
    std::string tag = r.query_value("tag");
    if (!tag.empty()) storage::ImageStore::normalize_tag(tag);
    std::string dir = images().store().make_tmp_dir("upload");
    std::exception_ptr failed;
    std::vector<storage::ImageInfo> made;
    try {
      std::string path = co_await body_to_file(r, dir);
      made = co_await images().import_file(path, tag);
    } catch (...) {
      failed = std::current_exception();
    }
    sys::remove_tree(dir);
    if (failed) std::rethrow_exception(failed);
    json items = json::array();
    for (const auto& i : made) items.push_back(i.to_json());
    if (!made.empty()) r.target = made.front().id;
    json body = {{"images", items}};
    co_await send_json(r, 201, body);
  }

  asio::awaitable<void> export_(Request& r) {
    std::string ref = r.params.at("ref");
    std::string dir = images().store().make_tmp_dir("export");
    std::exception_ptr failed;
    try {
      std::string path = dir + "/image.tar";
      co_await images().export_file(ref, path);
      r.target = ref;
      sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_errno("open " + path);
      ChunkedResponse out(r, 200, "application/x-tar");
      co_await out.begin();
      std::string buf(1 << 16, '\0');
      for (;;) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read " + path);
        if (n == 0) break;
        co_await out.write(std::string_view(buf.data(), static_cast<size_t>(n)));
      }
      co_await out.finish();
    } catch (...) {
      failed = std::current_exception();
    }
    sys::remove_tree(dir);
    if (failed) std::rethrow_exception(failed);
  }

  asio::awaitable<void> context(Request& r) {
    std::string dir = images().store().make_tmp_dir("context");
    std::exception_ptr failed;
    json made;
    try {
      std::string path = co_await body_to_file(r, dir);
      made = co_await images().add_context(path);
    } catch (...) {
      failed = std::current_exception();
    }
    sys::remove_tree(dir);
    if (failed) std::rethrow_exception(failed);
    r.target = made.value("id", "");
    co_await send_json(r, 201, made);
  }

  asio::awaitable<void> build(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"dockerfile", "context", "tags", "args", "no_cache"});
    control::BuildRequest req;
    if (!body.contains("dockerfile") || !body["dockerfile"].is_string()) {
      throw invalid_argument("\"dockerfile\" is required: the text of a Dockerfile",
                             {{"field", "dockerfile"}});
    }
    req.dockerfile = body["dockerfile"];
    if (body.contains("context") && !body["context"].is_null()) {
      if (!body["context"].is_string())
        throw invalid_argument("\"context\" must be a context id", {{"field", "context"}});
      req.context = body["context"];
    }
    if (body.contains("tags")) {
      if (!body["tags"].is_array())
        throw invalid_argument("\"tags\" must be a list of names", {{"field", "tags"}});
      for (const auto& t : body["tags"]) {
        if (!t.is_string())
          throw invalid_argument("\"tags\" must be a list of names", {{"field", "tags"}});
        req.tags.push_back(t);
      }
    }
    if (body.contains("args")) {
      if (!body["args"].is_object())
        throw invalid_argument("\"args\" must be an object of strings", {{"field", "args"}});
      for (const auto& [k, v] : body["args"].items()) {
        if (!v.is_string())
          throw invalid_argument("\"args." + k + "\" must be a string", {{"field", "args." + k}});
        req.args[k] = v;
      }
    }
    req.no_cache = bool_field(body, "no_cache", false);
    auto b = images().start_build(std::move(req));
    r.target = b->id;
    json answer = b->to_api();
    co_await send_json(r, 202, answer);
  }

  asio::awaitable<void> build_base(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"rebuild"});
    bool rebuild = bool_field(body, "rebuild", false);
    std::shared_ptr<Build> b;
    if (!rebuild && images().store().exists(control::kBaseImage)) {
      std::string base = control::kBaseImage;
      auto info = co_await images().inspect(base);
      json answer = {{"status", "exists"}, {"image", info.to_json()}};
      co_await send_json(r, 200, answer);
      co_return;
    }
    b = images().start_base_build();
    r.target = b->id;
    json answer = b->to_api();
    co_await send_json(r, 202, answer);
  }

  asio::awaitable<void> builds(Request& r) {
    using B = std::shared_ptr<Build>;
    json page = page_of<B>(
        r, images().builds(), [](const B& b) { return b->id; },
        [](const B& b) { return b->to_api(); });
    co_await send_json(r, 200, page);
  }

  asio::awaitable<void> build_get(Request& r) {
    auto b = images().get_build(r.params.at("id"));
    r.target = b->id;
    json answer = b->to_api();
    co_await send_json(r, 200, answer);
  }

  // The log as text; with follow, streamed until the build ends.
  asio::awaitable<void> build_logs(Request& r) {
    auto b = images().get_build(r.params.at("id"));
    bool follow = r.query_flag("follow");
    auto offset = static_cast<size_t>(r.query_int("offset", 0, 0, INT64_MAX));
    r.target = b->id;
    ChunkedResponse out(
        r, 200, "text/plain; charset=utf-8",
        {{"X-Pitbox-Build-Status", b->status == Build::Status::running     ? "running"
                                   : b->status == Build::Status::succeeded ? "succeeded"
                                                                           : "failed"}});
    co_await out.begin();
    for (;;) {
      if (b->log.size() > offset) {
        std::string chunk = b->log.substr(offset);
        offset = b->log.size();
        co_await out.write(chunk);
      }
      if (!follow || b->status != Build::Status::running) break;
      co_await images().wait_build(b, offset);
    }
    co_await out.finish();
  }

  Services& s_;
};

}  // namespace

void add_image_routes(Router& router, Services& services) {
  ImageRoutes::add(router, std::make_shared<ImageRoutes>(services));
}

}  // namespace pitbox::api
