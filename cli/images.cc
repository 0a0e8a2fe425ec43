// pitbox image ...: list, inspect, tag, remove, prune, import, export and build images through
// the daemon's API, with progress on stderr and build logs streamed as they come.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>

#include "build/ignore.h"
#include "cli/commands.h"
#include "cli/util.h"
#include "sys/fs.h"
#include "sys/units.h"

namespace pitbox::cli {

namespace {

using client::Client;
using client::query_escape;
using nlohmann::json;
namespace http = boost::beast::http;

std::string image_path(const std::string& ref) { return "/v1/images/" + query_escape(ref); }

std::string short_id(const std::string& id) {
  return id.rfind("sha256:", 0) == 0 ? id.substr(7, 12) : id;
}

class ImageCommands final : public ClientCommands {
 public:
  ImageCommands(CLI::App& app, GlobalOptions& global, bool full) : global_(global) {
    image_ = app.add_subcommand("image", "Manage images: ls, inspect, build, import, export...");
    if (!full) return;
    image_->require_subcommand(1);
    auto sub = [this](const char* name, const char* help) {
      CLI::App* s = image_->add_subcommand(name, help);
      s->add_option("--url", url_, "API URL (default http://127.0.0.1:7070)")
          ->envname("PITBOX_API_URL");
      s->add_option("--key", key_, "API key (default: the local daemon's admin key)")
          ->envname("PITBOX_API_KEY");
      return s;
    };
    ls_ = sub("ls", "List images");
    ls_->add_flag("--json", json_, "Print JSON");
    ls_->add_flag("--quiet,-q", quiet_, "Print only ids");
    inspect_ = sub("inspect", "Show an image as JSON");
    inspect_->add_option("image", ref_, "Image name, tag or id")->required();
    rm_ = sub("rm", "Remove images (or tags of them)");
    rm_->add_option("images", refs_, "Image names, tags or ids")->required();
    tag_ = sub("tag", "Give an image another name");
    tag_->add_option("image", ref_, "Image name, tag or id")->required();
    tag_->add_option("tag", new_tag_, "The new name, name[:tag]")->required();
    prune_ = sub("prune", "Remove images without tags that nothing uses, and unused layers");
    import_ = sub("import", "Import a docker save archive or an OCI image layout (tar or dir)");
    import_->add_option("source", source_, "Archive file, directory, or - for stdin")->required();
    import_->add_option("--tag,-t", new_tag_, "Also tag the image name[:tag]");
    export_ = sub("export", "Write an image as an OCI archive (docker load takes it too)");
    export_->add_option("image", ref_, "Image name, tag or id")->required();
    export_->add_option("--output,-o", output_, "File to write (default: stdout)");
    build_ = sub("build", "Build an image from a Dockerfile and a context directory");
    build_->add_option("context", source_, "The build context directory")->required();
    build_->add_option("--tag,-t", tags_, "Name the image name[:tag] (repeatable)");
    build_->add_option("--file,-f", dockerfile_, "The Dockerfile (default: CONTEXT/Dockerfile)");
    build_->add_option("--build-arg", build_args_, "KEY=VALUE for an ARG (repeatable)");
    build_->add_flag("--no-cache", no_cache_, "Run every step again");
    build_->add_flag("--quiet,-q", quiet_, "Print only the image id");
    base_ = sub("build-base", "Build the Debian base image (python3, git, ...) with mmdebstrap");
    base_->add_flag("--rebuild", rebuild_, "Build it again even if it exists");
  }

  bool chosen() const override { return image_->parsed(); }

  int run(const std::vector<std::string>&) override {
    try {
      Client c(client_config(global_, url_, key_));
      if (*ls_) return ls(c);
      if (*inspect_) return print(c.call(http::verb::get, image_path(ref_)));
      if (*rm_) {
        for (const auto& r : refs_) {
          json out = c.call(http::verb::delete_, image_path(r));
          for (const auto& t : out["untagged"])
            std::cout << "untagged " << t.get<std::string>() << "\n";
          for (const auto& d : out["deleted"])
            std::cout << "deleted " << d.get<std::string>() << "\n";
        }
        return 0;
      }
      if (*tag_) {
        json body = {{"tag", new_tag_}};
        json out = c.call(http::verb::post, image_path(ref_) + "/tag", body);
        std::cout << out["id"].get<std::string>() << "\n";
        return 0;
      }
      if (*prune_) {
        json out = c.call(http::verb::post, "/v1/images/prune", json::object());
        for (const auto& d : out["deleted"])
          std::cout << "deleted " << d.get<std::string>() << "\n";
        std::cout << "freed " << sys::format_size(out["bytes"].get<uint64_t>()) << " ("
                  << out["layers"].get<uint64_t>() << " layers)\n";
        return 0;
      }
      if (*import_) return import(c);
      if (*export_) return export_image(c);
      if (*build_) return build(c);
      if (*base_) return build_base(c);
    } catch (const Error& e) {
      std::fprintf(stderr, "pitbox: %s\n", e.message().c_str());
      return kExitClientError;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pitbox: %s\n", e.what());
      return kExitClientError;
    }
    return 0;
  }

 private:
  int print(const json& j) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }

  int ls(Client& c) {
    std::vector<json> all;
    std::string cursor;
    do {
      json page =
          c.call(http::verb::get, "/v1/images?limit=1000" +
                                      (cursor.empty() ? "" : "&cursor=" + query_escape(cursor)));
      for (const auto& i : page["items"]) all.push_back(i);
      cursor = page.value("next_cursor", json()).is_string()
                   ? page["next_cursor"].get<std::string>()
                   : "";
    } while (!cursor.empty());
    if (json_) return print(json(all));
    if (quiet_) {
      for (const auto& i : all) std::cout << i["id"].get<std::string>() << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& i : all) {
      std::string tags;
      for (const auto& t : i["tags"]) tags += (tags.empty() ? "" : ", ") + t.get<std::string>();
      rows.push_back({tags.empty() ? "<none>" : tags, short_id(i["id"]),
                      i["builtin"].get<bool>() ? "built-in" : ago(i["created_at"]),
                      std::to_string(i["layers"].size()),
                      i["builtin"].get<bool>() && i["size"].get<uint64_t>() == 0
                          ? "-"
                          : sys::format_size(i["size"].get<uint64_t>())});
    }
    print_table({"NAME", "ID", "CREATED", "LAYERS", "SIZE"}, rows);
    return 0;
  }

  // Uploads `source` (a file, "-" or a directory sent as a tar) to `target`.
  json upload_path(Client& c, const std::string& target, const std::string& source,
                   const std::string& what, std::function<bool(const std::string&)> skip) {
    Progress progress(what);
    struct stat st;
    if (source != "-" && ::stat(source.c_str(), &st) != 0) throw_errno(source);
    if (source != "-" && S_ISDIR(st.st_mode)) {
      LocalTar tar(source, "", std::move(skip));
      return c.upload(http::verb::post, target, "application/x-tar", [&](char* buf, size_t size) {
        size_t n = tar.fill(buf, size);
        progress.add(n);
        return n;
      });
    }
    sys::UniqueFd owned;
    int fd = 0;
    if (source != "-") {
      owned = sys::UniqueFd(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
      if (!owned) throw_errno("opening " + source);
      fd = owned.get();
    }
    return c.upload(http::verb::post, target, "application/x-tar", [&](char* buf, size_t size) {
      ssize_t n = ::read(fd, buf, size);
      if (n < 0) throw_errno("reading " + source);
      progress.add(static_cast<uint64_t>(n));
      return static_cast<size_t>(n);
    });
  }

  int import(Client& c) {
    std::string target = "/v1/images/import";
    if (!new_tag_.empty()) target += "?tag=" + query_escape(new_tag_);
    json out = upload_path(c, target, source_, "uploading " + source_, nullptr);
    for (const auto& i : out["images"]) {
      std::string tags;
      for (const auto& t : i["tags"]) tags += " " + t.get<std::string>();
      std::cout << i["id"].get<std::string>() << tags << "\n";
    }
    return 0;
  }

  int export_image(Client& c) {
    sys::UniqueFd owned;
    int fd = 1;
    std::string temp;
    if (!output_.empty() && output_ != "-") {
      temp = output_ + ".pitbox-part";
      owned = sys::UniqueFd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!owned) throw_errno("creating " + temp);
      fd = owned.get();
    } else if (::isatty(1)) {
      throw invalid_argument("export: will not write an archive to a terminal; use -o FILE");
    }
    Progress progress("exporting " + ref_);
    try {
      c.stream(http::verb::get, image_path(ref_) + "/export", {}, [&](std::string_view data) {
        if (!sys::write_all(fd, data)) throw_errno("writing " + (temp.empty() ? "stdout" : temp));
        progress.add(data.size());
      });
    } catch (...) {
      if (!temp.empty()) ::unlink(temp.c_str());
      throw;
    }
    if (!temp.empty() && ::rename(temp.c_str(), output_.c_str()) != 0) {
      int err = errno;
      ::unlink(temp.c_str());
      throw_errno("export: " + output_, err);
    }
    return 0;
  }

  // Streams a build's log until it ends; its exit code (0 when it succeeded).
  int follow(Client& c, const std::string& id) {
    c.stream(http::verb::get, "/v1/builds/" + query_escape(id) + "/logs?follow=1", {},
             [&](std::string_view data) {
               if (quiet_) return;
               std::cerr << data;
               std::cerr.flush();
             });
    json b = c.call(http::verb::get, "/v1/builds/" + query_escape(id));
    if (b["status"] == "succeeded") {
      std::cout << b["image_id"].get<std::string>() << "\n";
      return 0;
    }
    std::string message = b["error"].is_object() ? b["error"].value("message", "") : "";
    std::fprintf(stderr, "pitbox: build %s failed: %s\n", id.c_str(), message.c_str());
    return kExitClientError;
  }

  int build(Client& c) {
    std::string dockerfile = dockerfile_.empty() ? source_ + "/Dockerfile" : dockerfile_;
    std::string text;
    try {
      text = sys::read_file(dockerfile);
    } catch (const Error& e) {
      throw invalid_argument("build: cannot read the Dockerfile " + dockerfile + ": " +
                             e.message());
    }
    if (!sys::is_dir(source_)) throw invalid_argument("build: " + source_ + " is not a directory");
    // The context as docker sends it: without what .dockerignore excludes.
    build::IgnoreRules rules;
    if (sys::exists(source_ + "/.dockerignore")) {
      rules = build::IgnoreRules::parse(sys::read_file(source_ + "/.dockerignore"));
    }
    json ctx = upload_path(
        c, "/v1/build-contexts", source_, "sending the build context",
        [&rules](const std::string& rel) { return rules.ignored(rel) && rules.can_skip_dir(rel); });
    json body = {
        {"dockerfile", text}, {"context", ctx["id"]}, {"tags", tags_}, {"no_cache", no_cache_}};
    json args = json::object();
    for (const auto& a : build_args_) {
      size_t eq = a.find('=');
      if (eq == std::string::npos || eq == 0)
        throw invalid_argument("--build-arg \"" + a + "\" must be KEY=VALUE");
      args[a.substr(0, eq)] = a.substr(eq + 1);
    }
    body["args"] = args;
    json b = c.call(http::verb::post, "/v1/builds", body);
    return follow(c, b["id"]);
  }

  int build_base(Client& c) {
    json body = {{"rebuild", rebuild_}};
    json out = c.call(http::verb::post, "/v1/images/base", body);
    if (out.value("status", "") == "exists") {
      std::cerr << "the base image exists (use --rebuild to build it again)\n";
      std::cout << out["image"]["id"].get<std::string>() << "\n";
      return 0;
    }
    return follow(c, out["id"]);
  }

  GlobalOptions& global_;
  CLI::App* image_;
  CLI::App *ls_ = nullptr, *inspect_ = nullptr, *rm_ = nullptr, *tag_ = nullptr, *prune_ = nullptr,
           *import_ = nullptr, *export_ = nullptr, *build_ = nullptr, *base_ = nullptr;
  std::string url_, key_, ref_, new_tag_, source_, output_, dockerfile_;
  std::vector<std::string> refs_, tags_, build_args_;
  bool json_ = false, quiet_ = false, no_cache_ = false, rebuild_ = false;
};

}  // namespace

std::unique_ptr<ClientCommands> add_image_commands(CLI::App& app, GlobalOptions& global,
                                                   bool full) {
  return std::make_unique<ImageCommands>(app, global, full);
}

}  // namespace pitbox::cli
