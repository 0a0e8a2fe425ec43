// The files of a sandbox.
#include <fcntl.h>
#include <unistd.h>

#include "api/routes.h"
#include "control/files.h"
#include "sys/fd.h"
#include "sys/fs.h"

namespace pitbox::api {

namespace {

using control::entry_to_api;

class FileRoutes {
 public:
  explicit FileRoutes(Services& s) : s_(s) {}

  static void add(Router& router, const std::shared_ptr<FileRoutes>& self) {
    auto bind = [self](asio::awaitable<void> (FileRoutes::*fn)(Request&)) {
      return [self, fn](Request& r) { return (self.get()->*fn)(r); };
    };
    using V = http::verb;
    const std::string base = "/v1/sandboxes/{id}/files";
    router.add(V::get, base, Access::user, bind(&FileRoutes::read));
    router.add(V::put, base, Access::user, bind(&FileRoutes::write));
    router.add(V::delete_, base, Access::user, bind(&FileRoutes::remove));
    router.add(V::get, base + "/list", Access::user, bind(&FileRoutes::list));
    router.add(V::get, base + "/stat", Access::user, bind(&FileRoutes::stat));
    router.add(V::post, base + "/mkdir", Access::user, bind(&FileRoutes::mkdir));
    router.add(V::post, base + "/move", Access::user, bind(&FileRoutes::move));
    router.add(V::post, base + "/chmod", Access::user, bind(&FileRoutes::chmod));
    router.add(V::post, base + "/chown", Access::user, bind(&FileRoutes::chown));
    router.add(V::get, base + "/find", Access::user, bind(&FileRoutes::find));
    router.add(V::get, base + "/grep", Access::user, bind(&FileRoutes::grep));
    router.add(V::get, base + "/tar", Access::user, bind(&FileRoutes::tar_out));
    router.add(V::put, base + "/tar", Access::user, bind(&FileRoutes::tar_in));
  }

 private:
  asio::awaitable<std::shared_ptr<node::Channel>> channel(Request& r) {
    std::string id = r.params.at("id");
    auto [sb, ch] = co_await s_.sandboxes.reach(id, r.query_flag("auto_resume"));
    r.target = sb.id;
    co_return ch;
  }

  asio::awaitable<json> stat_entry(node::Channel& ch, const std::string& path, bool follow) {
    json stat_request = {{"op", "stat"}, {"path", path}, {"follow", follow}};
    json e = co_await ch.call(stat_request);
    co_return entry_to_api(e, e.value("path", path));
  }

  asio::awaitable<void> read(Request& r) {
    std::string path = required_path(r);
    auto offset = static_cast<uint64_t>(r.query_int("offset", 0, 0, INT64_MAX));
    int64_t length = r.query_int("length", -1, -1, INT64_MAX);
    auto ch = co_await channel(r);
    auto reader = co_await ch->read_file(path, offset, length);
    uint64_t size = reader->info().size;
    uint64_t expected = offset >= size ? 0 : size - offset;
    if (length >= 0) expected = std::min<uint64_t>(expected, static_cast<uint64_t>(length));
    ChunkedResponse out(r, 200, "application/octet-stream",
                        {{"X-Pitbox-File-Size", std::to_string(size)},
                         {"X-Pitbox-File-Mode", std::to_string(reader->info().mode)}});
    co_await out.begin();
    while (auto chunk = co_await reader->next()) co_await out.write(*chunk);
    co_await out.finish();
  }

  asio::awaitable<void> write(Request& r) {
    std::string path = required_path(r);
    std::optional<uint32_t> mode;
    if (std::string m = r.query_value("mode"); !m.empty()) mode = control::parse_mode(m, "mode");
    auto ch = co_await channel(r);
    auto upload = co_await control::Upload::begin(ch, path, mode);
    co_await r.read_body_stream(
        [&](std::string_view data) -> asio::awaitable<void> { co_await upload->write(data); });
    uint64_t size = co_await upload->commit();
    json answer = {{"path", path}, {"size", size}};
    co_await send_json(r, 200, answer);
  }

  asio::awaitable<void> remove(Request& r) {
    std::string path = required_path(r);
    bool recursive = r.query_flag("recursive");
    auto ch = co_await channel(r);
    json remove_request = {{"op", "remove"}, {"path", path}, {"recursive", recursive}};
    co_await ch->call(remove_request);
    co_await send_empty(r, 204);
  }

  asio::awaitable<void> list(Request& r) {
    std::string path = required_path(r);
    int64_t limit = r.query_int("limit", 100, 1, 1000);
    std::string cursor = r.query_value("cursor");
    auto ch = co_await channel(r);
    json request = {{"op", "list"}, {"path", path}, {"limit", limit}};
    if (!cursor.empty()) request["after"] = cursor;
    json page = co_await ch->call(request);
    json items = json::array();
    std::string dir = page.value("path", path);
    for (const auto& e : page["entries"]) {
      std::string name = e.value("name", "");
      items.push_back(entry_to_api(e, dir == "/" ? "/" + name : dir + "/" + name));
    }
    std::string next = page["next"].is_string() ? page["next"].get<std::string>() : "";
    co_await send_json(r, 200, page_json(std::move(items), next));
  }

  asio::awaitable<void> stat(Request& r) {
    std::string path = required_path(r);
    bool follow = r.query_flag("follow");
    auto ch = co_await channel(r);
    json entry = co_await stat_entry(*ch, path, follow);
    co_await send_json(r, 200, entry);
  }

  asio::awaitable<void> mkdir(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"path", "mode", "parents"});
    std::string path = control::check_path(body.value("path", json()), "path");
    uint32_t mode = body.contains("mode") ? control::parse_mode(body["mode"], "mode") : 0755;
    bool parents = bool_field(body, "parents", true);
    auto ch = co_await channel(r);
    json mkdir_request = {{"op", "mkdir"}, {"path", path}, {"mode", mode}, {"parents", parents}};
    co_await ch->call(mkdir_request);
    json entry = co_await stat_entry(*ch, path, false);
    co_await send_json(r, 201, entry);
  }

  asio::awaitable<void> move(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"from", "to", "overwrite"});
    std::string from = control::check_path(body.value("from", json()), "from");
    std::string to = control::check_path(body.value("to", json()), "to");
    bool overwrite = bool_field(body, "overwrite", false);
    auto ch = co_await channel(r);
    json rename_request = {{"op", "rename"}, {"from", from}, {"to", to}, {"overwrite", overwrite}};
    co_await ch->call(rename_request);
    json entry = co_await stat_entry(*ch, to, false);
    co_await send_json(r, 200, entry);
  }

  asio::awaitable<void> chmod(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"path", "mode"});
    std::string path = control::check_path(body.value("path", json()), "path");
    if (!body.contains("mode")) throw invalid_argument("\"mode\" is required", {{"field", "mode"}});
    uint32_t mode = control::parse_mode(body["mode"], "mode");
    auto ch = co_await channel(r);
    json chmod_request = {{"op", "chmod"}, {"path", path}, {"mode", mode}};
    co_await ch->call(chmod_request);
    json entry = co_await stat_entry(*ch, path, false);
    co_await send_json(r, 200, entry);
  }

  asio::awaitable<void> chown(Request& r) {
    json body = co_await r.read_json();
    check_fields(body, {"path", "uid", "gid"});
    std::string path = control::check_path(body.value("path", json()), "path");
    json request = {{"op", "chown"}, {"path", path}};
    for (const char* field : {"uid", "gid"}) {
      if (!body.contains(field)) continue;
      const json& v = body[field];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 65535) {
        throw invalid_argument(std::string("\"") + field + "\" must be a number from 0 to 65535",
                               {{"field", field}});
      }
      request[field] = v;
    }
    if (!body.contains("uid") && !body.contains("gid")) {
      throw invalid_argument("give \"uid\", \"gid\" or both");
    }
    auto ch = co_await channel(r);
    co_await ch->call(request);
    json entry = co_await stat_entry(*ch, path, false);
    co_await send_json(r, 200, entry);
  }

  asio::awaitable<void> find(Request& r) {
    std::string path = required_path(r);
    json request = {{"op", "find"},
                    {"path", path},
                    {"limit", r.query_int("limit", 1000, 1, 100000)},
                    {"max_depth", r.query_int("max_depth", 64, 0, 256)}};
    if (std::string name = r.query_value("name"); !name.empty()) request["name"] = name;
    if (std::string type = r.query_value("type"); !type.empty()) {
      static const std::set<std::string> kTypes = {"file",   "dir",  "symlink", "fifo",
                                                   "socket", "char", "block"};
      if (!kTypes.count(type)) {
        throw invalid_argument(
            "query parameter \"type\" must be one of file, dir, symlink, fifo, "
            "socket, char, block",
            {{"field", "type"}});
      }
      request["type"] = type;
    }
    auto ch = co_await channel(r);
    json result = co_await ch->call(request);
    json answer = {{"items", result["matches"]}, {"truncated", result["truncated"]}};
    co_await send_json(r, 200, answer);
  }

  asio::awaitable<void> grep(Request& r) {
    std::string path = required_path(r);
    std::string pattern = r.query_value("pattern");
    if (pattern.empty()) {
      throw invalid_argument("query parameter \"pattern\" is required", {{"field", "pattern"}});
    }
    json request = {{"op", "grep"},
                    {"path", path},
                    {"pattern", pattern},
                    {"regex", r.query_flag("regex")},
                    {"ignore_case", r.query_flag("ignore_case")},
                    {"limit", r.query_int("limit", 1000, 1, 100000)},
                    {"max_depth", r.query_int("max_depth", 64, 0, 256)}};
    if (std::string glob = r.query_value("glob"); !glob.empty()) request["glob"] = glob;
    auto ch = co_await channel(r);
    json result = co_await ch->call(request);
    json answer = {{"items", result["matches"]}, {"truncated", result["truncated"]}};
    co_await send_json(r, 200, answer);
  }

  asio::awaitable<void> tar_out(Request& r) {
    std::string path = required_path(r);
    auto ch = co_await channel(r);
    // Fails before the answer starts when the path does not exist.
    json stat_request = {{"op", "stat"}, {"path", path}, {"follow", true}};
    co_await ch->call(stat_request);
    ChunkedResponse out(r, 200, "application/x-tar");
    co_await control::write_tar(ch, path, [&](std::string_view data) -> asio::awaitable<void> {
      co_await out.write(data);
    });
    co_await out.finish();
  }

  asio::awaitable<void> tar_in(Request& r) {
    std::string path = required_path(r);
    auto ch = co_await channel(r);
    // The archive is kept on the host while it comes in (an unnamed file, gone on any exit),
    // then unpacked into the box.
    sys::make_dirs(s_.tmp_dir, 0700);
    sys::UniqueFd tmp(::open(s_.tmp_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!tmp) throw_errno("making a temporary file in " + s_.tmp_dir);
    co_await r.read_body_stream([&](std::string_view data) -> asio::awaitable<void> {
      if (!sys::write_all(tmp.get(), data)) throw_errno("buffering the upload");
      co_return;
    });
    if (::lseek(tmp.get(), 0, SEEK_SET) != 0) throw_errno("rewinding the upload");
    control::TarResult result = co_await control::extract_tar(ch, path, tmp.get());
    json answer = {{"path", path},
                   {"files", result.files},
                   {"dirs", result.dirs},
                   {"links", result.links},
                   {"skipped", result.skipped}};
    co_await send_json(r, 200, answer);
  }

  Services& s_;
};

}  // namespace

void add_file_routes(Router& router, Services& services) {
  FileRoutes::add(router, std::make_shared<FileRoutes>(services));
}

}  // namespace pitbox::api
