#include "cli/commands.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>

#include "api/daemon.h"
#include "cli/terminal.h"
#include "cli/util.h"
#include "client/client.h"
#include "storage/tar_writer.h"
#include "sys/fd.h"
#include "sys/fs.h"
#include "sys/text.h"
#include "sys/units.h"

namespace pitbox::cli {

namespace {

using client::ApiError;
using client::Client;
using client::query_escape;
using nlohmann::json;
namespace http = boost::beast::http;

std::string labels_text(const json& labels) {
  std::string out;
  if (!labels.is_object()) return out;
  for (const auto& [k, v] : labels.items()) {
    if (!out.empty()) out += ",";
    out += k + "=" + v.get<std::string>();
  }
  return out;
}

// Extracts a tar stream into a local directory, refusing names that lead out of it.
class LocalUntar {
 public:
  explicit LocalUntar(const std::string& dir) : dir_(dir) {
    reader_ = archive_read_new();
    archive_read_support_format_tar(reader_);
    archive_read_support_format_gnutar(reader_);
    writer_ = archive_write_disk_new();
    archive_write_disk_set_options(writer_, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  }
  ~LocalUntar() {
    archive_read_free(reader_);
    archive_write_free(writer_);
  }
  // Extracts the whole archive held in the file `fd`.
  void extract(int fd) {
    if (archive_read_open_fd(reader_, fd, 64 * 1024) != ARCHIVE_OK) fail(reader_);
    struct archive_entry* e;
    int rc;
    while ((rc = archive_read_next_header(reader_, &e)) == ARCHIVE_OK) {
      // Names are put below the destination; one that is absolute or climbs is refused.
      std::string name = inside(archive_entry_pathname(e));
      archive_entry_set_pathname(e, (dir_ + "/" + name).c_str());
      if (const char* hl = archive_entry_hardlink(e)) {
        archive_entry_set_hardlink(e, (dir_ + "/" + inside(hl)).c_str());
      }
      if (archive_write_header(writer_, e) != ARCHIVE_OK) fail(writer_);
      const void* buf;
      size_t size;
      la_int64_t offset;
      while ((rc = archive_read_data_block(reader_, &buf, &size, &offset)) == ARCHIVE_OK) {
        if (archive_write_data_block(writer_, buf, size, offset) != ARCHIVE_OK) fail(writer_);
      }
      if (rc != ARCHIVE_EOF) fail(reader_);
      archive_write_finish_entry(writer_);
    }
    if (rc != ARCHIVE_EOF) fail(reader_);
  }

 private:
  static std::string inside(const char* raw) {
    std::string name = raw ? raw : "";
    bool climbs = name.empty() || name[0] == '/' || name == ".." || name.rfind("../", 0) == 0 ||
                  name.find("/../") != std::string::npos ||
                  (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0);
    if (climbs) throw invalid_argument("extracting: the entry \"" + name + "\" leads out");
    return name;
  }
  [[noreturn]] static void fail(struct archive* a) {
    const char* msg = archive_error_string(a);
    throw invalid_argument(std::string("extracting: ") + (msg ? msg : "unknown error"));
  }
  std::string dir_;
  struct archive* reader_;
  struct archive* writer_;
};

class Commands final : public ClientCommands {
 public:
  Commands(CLI::App& app, GlobalOptions& global) : global_(global) {
    auto client_options = [this](CLI::App* sub) {
      sub->add_option("--url", url_, "API URL (default http://127.0.0.1:7070)")
          ->envname("PITBOX_API_URL");
      sub->add_option("--key", key_, "API key (default: the local daemon's admin key)")
          ->envname("PITBOX_API_KEY");
      return sub;
    };

    serve_ = app.add_subcommand("serve", "Run the pitbox daemon (HTTP API on --listen)");
    serve_->add_option("--listen", listen_, "Address to listen on, host:port")
        ->envname("PITBOX_LISTEN")
        ->capture_default_str();
    serve_->add_flag("--quiet", quiet_, "Do not log every request");
    serve_->add_option("--pool", pool_size_, "Started boxes of the default image kept ready")
        ->envname("PITBOX_POOL")
        ->check(CLI::Range(0, 1000))
        ->capture_default_str();
    serve_
        ->add_option("--default-image", default_image_,
                     "Image of creates that name none (default: base once built, else host)")
        ->envname("PITBOX_DEFAULT_IMAGE");
    serve_
        ->add_option("--storage", storage_,
                     "Storage driver: overlay (any filesystem), btrfs (the state directory's, or "
                     "a pool file <state>/pool.img), btrfs:SIZE (a pool file of that size)")
        ->envname("PITBOX_STORAGE")
        ->capture_default_str();
    serve_
        ->add_option("--network", network_default_,
                     "Network policy of creates that name none: egress (outbound allowed), none "
                     "(nothing leaves the box), or off (no network at all, only loopback)")
        ->envname("PITBOX_NETWORK")
        ->check(CLI::IsMember({"egress", "none", "off"}))
        ->capture_default_str();
    serve_
        ->add_option("--network-range", network_range_,
                     "Private IPv4 range boxes take their addresses from (a /17 or larger)")
        ->envname("PITBOX_NETWORK_RANGE")
        ->capture_default_str();
    serve_
        ->add_option("--dns-upstream", dns_upstream_,
                     "DNS servers the boxes' resolver asks, IP[:PORT],... (default: those of "
                     "/etc/resolv.conf; off: boxes resolve no names)")
        ->envname("PITBOX_DNS_UPSTREAM");
    serve_
        ->add_option("--preview-domain", preview_domain_,
                     "Domain of preview links by host: http://PORT-BOX.DOMAIN:PORT/ (point its "
                     "wildcard at this server; localhost needs nothing)")
        ->envname("PITBOX_PREVIEW_DOMAIN")
        ->capture_default_str();
    serve_->add_flag("--build-base", build_base_,
                     "Build the Debian base image in the background if it is missing");

    create_ = client_options(app.add_subcommand("create", "Create a sandbox and start it"));
    create_->add_option("--name", create_body_name_, "A unique name");
    create_->add_option("--image", image_, "Image name, tag or id (default: the server's)");
    create_->add_option("--snapshot", snapshot_, "Start with the files of this snapshot");
    create_->add_option("--label,-l", labels_, "KEY=VALUE (repeatable)");
    create_->add_option("--env,-e", env_, "KEY=VALUE (repeatable)");
    create_->add_option("--cpus", cpus_, "CPU limit, e.g. 0.5 or 2");
    create_->add_option("--memory,-m", memory_, "Memory limit, e.g. 512m");
    create_->add_option("--pids", pids_, "Most processes at once");
    create_->add_option("--disk", disk_, "Disk limit of its files, e.g. 10g (btrfs storage)");
    create_->add_option("--workdir,-w", workdir_, "Working directory of commands");
    create_->add_option("--user,-u", user_, "User of commands");
    create_->add_option("--auto-stop", auto_stop_, "Stop after this many idle minutes");
    create_->add_option("--auto-delete", auto_delete_, "Delete this many minutes after stopping");
    create_->add_option("--auto-archive", auto_archive_,
                        "Archive this many minutes after stopping");
    create_->add_flag("--ephemeral", ephemeral_, "Delete the sandbox when it stops");
    add_network_options(create_);
    create_->add_flag("--json", json_, "Print the sandbox as JSON");

    ls_ = client_options(app.add_subcommand("ls", "List sandboxes"));
    ls_->add_option("--label,-l", labels_, "Only those with KEY=VALUE (repeatable)");
    ls_->add_option("--state", state_, "Only those in this state");
    ls_->add_flag("--json", json_, "Print JSON");
    ls_->add_flag("--quiet,-q", quiet_, "Print only ids");

    inspect_ = client_options(app.add_subcommand("inspect", "Show a sandbox as JSON"));
    inspect_->add_option("box", box_, "Sandbox id or name")->required();

    exec_ = client_options(app.add_subcommand("exec", "Run a command in a sandbox"));
    exec_->add_flag("--tty,-t", tty_, "Give the command a terminal");
    exec_->add_flag("--interactive,-i", interactive_, "Send stdin to the command");
    exec_->add_flag("--detach,-d", detach_, "Run in the background; print the session id");
    exec_->add_option("--env,-e", env_, "KEY=VALUE (repeatable)");
    exec_->add_option("--workdir,-w", workdir_, "Working directory");
    exec_->add_option("--user,-u", user_, "User: name, uid or uid:gid");
    exec_->add_option("--timeout", timeout_, "Kill the command after this many seconds");
    exec_->add_option("box", box_, "Sandbox id or name")->required();
    exec_->prefix_command();
    exec_->allow_extras();

    shell_ = client_options(app.add_subcommand("shell", "Open an interactive shell in a sandbox"));
    shell_->add_option("box", box_, "Sandbox id or name")->required();

    cp_ = client_options(app.add_subcommand(
        "cp", "Copy files between here and a sandbox: cp ./f BOX:/path, cp BOX:/path ./f"));
    cp_->add_option("source", source_, "A local path or BOX:PATH")->required();
    cp_->add_option("destination", destination_, "A local path or BOX:PATH (- for stdout)")
        ->required();

    rm_ = client_options(app.add_subcommand("rm", "Delete sandboxes"));
    rm_->add_option("boxes", boxes_, "Sandbox ids or names")->required();
    stop_ = client_options(app.add_subcommand("stop", "Stop sandboxes (their files stay)"));
    stop_->add_option("boxes", boxes_, "Sandbox ids or names")->required();
    start_ = client_options(app.add_subcommand("start", "Start stopped sandboxes again"));
    start_->add_option("boxes", boxes_, "Sandbox ids or names")->required();

    label_ = client_options(
        app.add_subcommand("label", "Set labels (KEY=VALUE) or remove them (KEY-) of a sandbox"));
    label_->add_option("box", box_, "Sandbox id or name")->required();
    label_->add_option("changes", changes_, "KEY=VALUE or KEY-")->required();

    network_ = client_options(app.add_subcommand(
        "network", "Show a sandbox's network, or give it another policy (in force at once)"));
    network_->add_option("box", box_, "Sandbox id or name")->required();
    add_network_options(network_);
    network_->add_flag("--json", json_, "Print JSON");

    ports_ = client_options(
        app.add_subcommand("ports", "List the ports something listens on in a sandbox"));
    ports_->add_option("box", box_, "Sandbox id or name")->required();
    ports_->add_flag("--json", json_, "Print JSON");

    preview_ = client_options(
        app.add_subcommand("preview", "Make a preview link to a port of a sandbox; prints it"));
    preview_->add_option("box", box_, "Sandbox id or name")->required();
    preview_->add_option("port", port_, "The port")->required();
    preview_->add_option("--expires", expires_, "Seconds the link works (default: a day)");
    preview_->add_flag("--path", path_url_, "The link by path rather than by host");
    auto* revoke =
        preview_->add_flag("--revoke", revoke_,
                           "Instead: revoke every preview link of the sandbox (and make its "
                           "public ports private)");
    auto* open = preview_->add_flag(
        "--public", public_, "Instead: anyone may open the port's preview, without a link or key");
    auto* close =
        preview_->add_flag("--private", private_, "Instead: the port's preview needs a link again");
    open->excludes(close)->excludes(revoke);
    close->excludes(revoke);
    preview_->add_flag("--json", json_, "Print JSON");

    port_forward_ = client_options(app.add_subcommand(
        "port-forward", "Forward a local TCP port to a port of a sandbox (until Ctrl-C)"));
    port_forward_->add_option("box", box_, "Sandbox id or name")->required();
    port_forward_->add_option("ports", forward_spec_, "[LOCAL:]REMOTE (LOCAL 0: any free port)")
        ->required();
    port_forward_->add_option("--address", forward_address_, "Local address to listen on")
        ->capture_default_str();

    logs_ = client_options(app.add_subcommand("logs", "Show the output of a background session"));
    logs_->add_option("box", box_, "Sandbox id or name")->required();
    logs_->add_option("session", session_, "Session id (from exec -d)")->required();
    logs_->add_flag("--follow,-f", follow_, "Keep printing until the session ends");

    keys_ = app.add_subcommand("keys", "Manage API keys");
    keys_->require_subcommand(1);
    keys_create_ = client_options(keys_->add_subcommand("create", "Create an API key"));
    keys_create_->add_option("name", key_name_, "What the key is for")->required();
    keys_create_->add_flag("--json", json_, "Print JSON");
    keys_ls_ = client_options(keys_->add_subcommand("ls", "List API keys"));
    keys_ls_->add_flag("--json", json_, "Print JSON");
    keys_rm_ = client_options(keys_->add_subcommand("rm", "Revoke API keys"));
    keys_rm_->add_option("ids", boxes_, "Key ids")->required();
  }

  bool chosen() const override {
    for (CLI::App* sub : {serve_, create_, ls_, inspect_, exec_, shell_, cp_, rm_, stop_, start_,
                          label_, logs_, keys_, network_, ports_, preview_, port_forward_}) {
      if (*sub) return true;
    }
    return false;
  }

  int run(const std::vector<std::string>& after_dashes) override {
    bool exec_like = *exec_ || *shell_;
    try {
      if (*serve_) {
        api::DaemonOptions o;
        o.state_dir = global_.state_dir;
        o.listen = listen_;
        o.cgroup_parent = global_.cgroup_parent;
        o.log_requests = !quiet_;
        o.pool_size = pool_size_;
        o.default_image = default_image_;
        o.build_base = build_base_;
        o.storage = storage_;
        o.network_default = network_default_;
        o.network_range = network_range_;
        o.preview_domain = preview_domain_;
        o.dns_upstream = dns_upstream_;
        return api::run_daemon(o);
      }
      Client c(client_config(global_, url_, key_));
      if (*create_) return create(c);
      if (*ls_) return ls(c);
      if (*inspect_) return print(c.call(http::verb::get, sandbox_path(box_)), true);
      if (*exec_) {
        std::vector<std::string> cmd = exec_->remaining();
        cmd.insert(cmd.end(), after_dashes.begin(), after_dashes.end());
        return exec(c, cmd);
      }
      if (*shell_) return terminal(c, {});
      if (*cp_) return cp(c);
      if (*rm_) return each(c, http::verb::delete_, "", "deleted");
      if (*stop_) return each(c, http::verb::post, "/stop", "stopped");
      if (*start_) return each(c, http::verb::post, "/start", "started");
      if (*label_) return label(c);
      if (*network_) return network(c);
      if (*ports_) return ports(c);
      if (*preview_) return preview(c);
      if (*port_forward_) return port_forward(c);
      if (*logs_) return logs(c);
      if (*keys_create_) {
        json body = {{"name", key_name_}};
        json k = c.call(http::verb::post, "/v1/keys", body);
        if (json_) return print(k, true);
        std::cout << k["key"].get<std::string>() << "\n";
        std::cerr << "(" << k["id"].get<std::string>()
                  << ": keep the key now, it is not shown again)\n";
        return 0;
      }
      if (*keys_ls_) return keys_list(c);
      if (*keys_rm_) {
        for (const auto& id : boxes_) {
          c.call(http::verb::delete_, "/v1/keys/" + query_escape(id));
          std::cout << id << "\n";
        }
        return 0;
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "pitbox: %s\n", e.message().c_str());
      return exec_like ? kExitPitboxError : kExitClientError;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pitbox: %s\n", e.what());
      return exec_like ? kExitPitboxError : kExitClientError;
    }
    return 0;
  }

 private:
  int print(const json& j, bool pretty) {
    std::cout << (pretty ? j.dump(2) : j.dump()) << "\n";
    return 0;
  }

  static std::pair<std::string, std::string> key_value(const std::string& text,
                                                       const std::string& flag) {
    size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw invalid_argument(flag + " \"" + text + "\" must be KEY=VALUE");
    }
    return {text.substr(0, eq), text.substr(eq + 1)};
  }

  json env_object() {
    json env = json::object();
    for (const auto& e : env_) {
      if (e.find('=') == std::string::npos) {
        const char* v = std::getenv(e.c_str());
        if (v) env[e] = v;  // --env NAME passes this shell's value, like docker
        continue;
      }
      auto [k, v] = key_value(e, "--env");
      env[k] = v;
    }
    return env;
  }

  int create(Client& c) {
    json body = json::object();
    if (!create_body_name_.empty()) body["name"] = create_body_name_;
    if (!image_.empty()) body["image"] = image_;
    if (!labels_.empty()) {
      body["labels"] = json::object();
      for (const auto& l : labels_) {
        auto [k, v] = key_value(l, "--label");
        body["labels"][k] = v;
      }
    }
    if (!env_.empty()) body["env"] = env_object();
    if (!cpus_.empty()) {
      char* end = nullptr;
      double cpus = std::strtod(cpus_.c_str(), &end);
      if (end == cpus_.c_str() || *end)
        throw invalid_argument("--cpus \"" + cpus_ + "\" is not a number");
      body["cpus"] = cpus;
    }
    if (!memory_.empty()) body["memory"] = memory_;
    if (!disk_.empty()) body["disk"] = disk_;
    if (!snapshot_.empty()) body["snapshot"] = snapshot_;
    if (!pids_.empty()) {
      try {
        body["pids"] = std::stoll(pids_);
      } catch (const std::exception&) {
        throw invalid_argument("--pids \"" + pids_ + "\" is not a whole number");
      }
    }
    if (!workdir_.empty()) body["workdir"] = workdir_;
    if (!user_.empty()) body["user"] = user_;
    if (auto_stop_) body["auto_stop_minutes"] = *auto_stop_;
    if (auto_delete_) body["auto_delete_minutes"] = *auto_delete_;
    if (auto_archive_) body["auto_archive_minutes"] = *auto_archive_;
    if (ephemeral_) body["ephemeral"] = true;
    if (auto network = network_body()) body["network"] = *network;
    json sb = c.call(http::verb::post, "/v1/sandboxes", body);
    if (json_) return print(sb, true);
    std::cout << sb["id"].get<std::string>() << "\n";
    return 0;
  }

  int ls(Client& c) {
    std::string query = "?limit=1000";
    for (const auto& l : labels_) query += "&label=" + query_escape(l);
    if (!state_.empty()) query += "&state=" + query_escape(state_);
    json all = json::array();
    std::string cursor;
    do {
      json page =
          c.call(http::verb::get, "/v1/sandboxes" + query +
                                      (cursor.empty() ? "" : "&cursor=" + query_escape(cursor)));
      for (auto& item : page["items"]) all.push_back(item);
      cursor = page["next_cursor"].is_string() ? page["next_cursor"].get<std::string>() : "";
    } while (!cursor.empty());
    if (json_) return print(all, true);
    if (quiet_) {
      for (const auto& sb : all) std::cout << sb["id"].get<std::string>() << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& sb : all) {
      rows.push_back({sb["id"].get<std::string>(),
                      sb["name"].is_string() ? sb["name"].get<std::string>() : "",
                      sb["state"].get<std::string>(), sb["image"].get<std::string>(),
                      ago(sb["created_at"]), labels_text(sb["labels"])});
    }
    print_table({"ID", "NAME", "STATE", "IMAGE", "CREATED", "LABELS"}, rows);
    return 0;
  }

  int each(Client& c, http::verb method, const std::string& suffix, const std::string& done) {
    int rc = 0;
    for (const auto& box : boxes_) {
      try {
        c.call(method, sandbox_path(box) + suffix);
        std::cout << box << "\n";
      } catch (const Error& e) {
        std::fprintf(stderr, "pitbox: %s: %s\n", box.c_str(), e.message().c_str());
        rc = kExitClientError;
      }
    }
    (void)done;
    return rc;
  }

  int label(Client& c) {
    json sb = c.call(http::verb::get, sandbox_path(box_));
    json labels = sb["labels"].is_object() ? sb["labels"] : json::object();
    for (const auto& change : changes_) {
      if (!change.empty() && change.back() == '-' && change.find('=') == std::string::npos) {
        labels.erase(change.substr(0, change.size() - 1));
      } else {
        auto [k, v] = key_value(change, "label");
        labels[k] = v;
      }
    }
    json body = {{"labels", labels}};
    json changed = c.call(http::verb::put, sandbox_path(box_) + "/labels", body);
    std::cout << labels_text(changed["labels"]) << "\n";
    return 0;
  }

  void add_network_options(CLI::App* cmd) {
    cmd->add_option("--network", network_policy_, "Network policy: egress or none")
        ->check(CLI::IsMember({"egress", "none"}));
    cmd->add_option("--allow", allow_, "Reach only these CIDRs (and allowed domains; repeatable)");
    cmd->add_option("--deny", deny_, "Never reach these CIDRs (repeatable)");
    cmd->add_option("--allow-domain", allow_domains_,
                    "Reach only names like these, e.g. pypi.org or *.example.com (repeatable)");
    cmd->add_option("--join", join_,
                    "Join this box-to-box network: members reach each other by name (repeatable)");
  }

  // The "network" of a request, when an option names one.
  std::optional<json> network_body() const {
    if (network_policy_.empty() && allow_.empty() && deny_.empty() && allow_domains_.empty() &&
        join_.empty()) {
      return std::nullopt;
    }
    json n = json::object();
    if (!network_policy_.empty()) n["policy"] = network_policy_;
    if (!allow_.empty()) n["allow_cidrs"] = allow_;
    if (!deny_.empty()) n["deny_cidrs"] = deny_;
    if (!allow_domains_.empty()) n["allow_domains"] = allow_domains_;
    if (!join_.empty()) n["networks"] = join_;
    return n;
  }

  int network(Client& c) {
    json sb;
    if (auto body = network_body()) {
      sb = c.call(http::verb::put, sandbox_path(box_) + "/network", *body);
    } else {
      sb = c.call(http::verb::get, sandbox_path(box_));
    }
    const json& n = sb["network"];
    if (json_) return print(n, true);
    auto list = [](const json& items) {
      std::string s;
      for (const auto& i : items) s += (s.empty() ? "" : ",") + i.get<std::string>();
      return s.empty() ? "-" : s;
    };
    std::cout << "policy         " << n.value("policy", "") << "\n"
              << "address        "
              << (n["address"].is_string() ? n["address"].get<std::string>() : "-")
              << "\nallow_cidrs    " << list(n["allow_cidrs"]) << "\ndeny_cidrs     "
              << list(n["deny_cidrs"]) << "\nallow_domains  " << list(n["allow_domains"])
              << "\nnetworks       " << list(n["networks"]) << "\n";
    return 0;
  }

  int ports(Client& c) {
    json page = c.call(http::verb::get, sandbox_path(box_) + "/ports");
    if (json_) return print(page["items"], true);
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : page["items"]) {
      rows.push_back({std::to_string(p["port"].get<int>()), p.value("public", false) ? "yes" : "no",
                      p["url"].get<std::string>()});
    }
    print_table({"PORT", "PUBLIC", "PREVIEW (with an API key, or: pitbox preview BOX PORT)"}, rows);
    return 0;
  }

  int preview(Client& c) {
    if (revoke_) {
      c.call(http::verb::delete_, sandbox_path(box_) + "/preview-urls");
      std::cout << "revoked\n";
      return 0;
    }
    if (public_ || private_) {
      json access = c.call(public_ ? http::verb::put : http::verb::delete_,
                           sandbox_path(box_) + "/ports/" + std::to_string(port_) + "/public");
      if (json_) return print(access, true);
      if (private_) {
        std::cout << "port " << port_ << " of " << box_ << " needs a link or an API key\n";
        return 0;
      }
      std::cout << access[path_url_ ? "path_url" : "url"].get<std::string>() << "\n";
      std::cerr << "(public: anyone who reaches this daemon may open it; --private undoes it)\n";
      return 0;
    }
    json body = json::object();
    if (expires_) body["expires_in"] = *expires_;
    json link =
        c.call(http::verb::post,
               sandbox_path(box_) + "/ports/" + std::to_string(port_) + "/preview-url", body);
    if (json_) return print(link, true);
    std::cout << link[path_url_ ? "path_url" : "url"].get<std::string>() << "\n";
    std::cerr << "(works until " << link["expires_at"].get<std::string>() << ")\n";
    return 0;
  }

  int port_forward(Client& c) {
    auto number = [&](const std::string& text, int min) {
      int v = -1;
      try {
        size_t used = 0;
        v = std::stoi(text, &used);
        if (used != text.size()) v = -1;
      } catch (const std::exception&) {
      }
      if (v < min || v > 65535) {
        throw invalid_argument("port-forward: \"" + forward_spec_ +
                               "\" must be [LOCAL:]REMOTE, ports from 1 to 65535 (LOCAL 0: any)");
      }
      return static_cast<uint16_t>(v);
    };
    size_t colon = forward_spec_.find(':');
    uint16_t remote =
        number(colon == std::string::npos ? forward_spec_ : forward_spec_.substr(colon + 1), 1);
    uint16_t local =
        colon == std::string::npos ? remote : number(forward_spec_.substr(0, colon), 0);
    json sb = c.call(http::verb::get, sandbox_path(box_));  // a clear error for a wrong box now
    std::string id = sb["id"].get<std::string>();
    std::string target = sandbox_path(id) + "/ports/" + std::to_string(remote) + "/forward";
    c.port_forward(
        target, forward_address_, local,
        [&](uint16_t port) {
          std::fprintf(stderr, "forwarding %s:%u -> %s:%u (Ctrl-C ends it)\n",
                       forward_address_.c_str(), port, id.c_str(), remote);
        },
        [](const std::string& why) { std::fprintf(stderr, "pitbox: %s\n", why.c_str()); });
    return 0;
  }

  int logs(Client& c) {
    std::string target = sandbox_path(box_) + "/sessions/" + query_escape(session_) + "/logs" +
                         (follow_ ? "?follow=true" : "");
    c.stream(http::verb::get, target, std::nullopt,
             [](std::string_view data) { write_out(STDOUT_FILENO, data); });
    return 0;
  }

  int keys_list(Client& c) {
    json page = c.call(http::verb::get, "/v1/keys?limit=1000");
    if (json_) return print(page["items"], true);
    std::vector<std::vector<std::string>> rows;
    for (const auto& k : page["items"]) {
      rows.push_back({k["id"].get<std::string>(), k["name"].get<std::string>(),
                      k.value("admin", false) ? "yes" : "", ago(k["created_at"])});
    }
    print_table({"ID", "NAME", "ADMIN", "CREATED"}, rows);
    return 0;
  }

  int exec(Client& c, const std::vector<std::string>& cmd) {
    if (cmd.empty()) throw invalid_argument("exec: no command given (pitbox exec BOX -- CMD...)");
    if (tty_ && !detach_) return terminal(c, cmd);
    json body = {{"cmd", cmd}};
    if (!env_.empty()) body["env"] = env_object();
    if (!workdir_.empty()) body["cwd"] = workdir_;
    if (!user_.empty()) body["user"] = user_;
    if (timeout_) body["timeout_ms"] = static_cast<int64_t>(*timeout_ * 1000);
    if (detach_) {
      if (tty_) body["tty"] = true;
      json s = c.call(http::verb::post, sandbox_path(box_) + "/sessions", body);
      std::cout << s["id"].get<std::string>() << "\n";
      return 0;
    }
    if (interactive_) {
      // All of stdin, sent with the command (as `docker exec -i` does, stdin only with -i).
      std::string input = sys::read_fd(STDIN_FILENO, 64u << 20);
      if (sys::is_valid_utf8(input)) {
        body["stdin"] = input;
      } else {
        body["stdin_base64"] = sys::base64_encode(input);
      }
    }
    int exit_code = kExitPitboxError;
    std::string line;
    c.stream(http::verb::post, sandbox_path(box_) + "/exec?stream=true", body,
             [&](std::string_view data) {
               line.append(data);
               size_t nl;
               while ((nl = line.find('\n')) != std::string::npos) {
                 json ev = json::parse(line.substr(0, nl), nullptr, false);
                 line.erase(0, nl + 1);
                 if (!ev.is_object()) continue;
                 std::string type = ev.value("type", "");
                 if (type == "exit") {
                   exit_code = ev.value("exit_code", kExitPitboxError);
                   continue;
                 }
                 std::string out;
                 if (ev.contains("data")) {
                   out = ev["data"].get<std::string>();
                 } else if (ev.contains("data_base64")) {
                   out = sys::base64_decode(ev["data_base64"].get<std::string>()).value_or("");
                 }
                 write_out(type == "stderr" ? STDERR_FILENO : STDOUT_FILENO, out);
               }
             });
    return exit_code;
  }

  int terminal(Client& c, const std::vector<std::string>& cmd) {
    auto size = terminal_size(STDIN_FILENO).value_or(TerminalSize{});
    std::string target = sandbox_path(box_) + "/terminal?rows=" + std::to_string(size.rows) +
                         "&cols=" + std::to_string(size.cols);
    for (const auto& a : cmd) target += "&cmd=" + query_escape(a);
    if (const char* term = std::getenv("TERM"); term && *term) {
      target += "&term=" + query_escape(term);
    }
    if (!workdir_.empty()) target += "&cwd=" + query_escape(workdir_);
    if (!user_.empty()) target += "&user=" + query_escape(user_);
    std::optional<RawMode> raw;
    if (::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
    TerminalSize last = size;
    Client::TerminalIo io;
    io.input_fd = STDIN_FILENO;
    io.output = [](std::string_view data) { write_out(STDOUT_FILENO, data); };
    io.resized = [&last]() -> std::optional<std::pair<uint16_t, uint16_t>> {
      auto now = terminal_size(STDIN_FILENO);
      if (!now || (now->rows == last.rows && now->cols == last.cols)) return std::nullopt;
      last = *now;
      return std::pair{now->rows, now->cols};
    };
    json exit = c.terminal(target, io);
    raw.reset();
    if (!exit.is_object()) {
      std::fprintf(stderr, "pitbox: the terminal closed without an exit status\n");
      return kExitPitboxError;
    }
    return exit.value("exit_code", kExitPitboxError);
  }

  // "BOX:PATH" -> {box, path}; a local path otherwise (one with a colon is written ./a:b).
  static std::optional<std::pair<std::string, std::string>> remote(const std::string& spec) {
    size_t colon = spec.find(':');
    if (colon == std::string::npos || colon == 0) return std::nullopt;
    std::string box = spec.substr(0, colon);
    if (box.find('/') != std::string::npos) return std::nullopt;
    return std::pair{box, spec.substr(colon + 1)};
  }

  // The entry at `path` in the box, or null when there is none.
  static json remote_stat(Client& c, const std::string& box, const std::string& path) {
    try {
      return c.call(http::verb::get,
                    sandbox_path(box) + "/files/stat?follow=true&path=" + query_escape(path));
    } catch (const ApiError& e) {
      if (e.status() == 404) return nullptr;
      throw;
    }
  }

  static std::string basename_of(std::string path) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
  }

  int cp(Client& c) {
    auto from = remote(source_);
    auto to = remote(destination_);
    if (from && to) throw invalid_argument("cp: copy between two sandboxes through here");
    if (!from && !to) throw invalid_argument("cp: one side must be BOX:PATH");
    if (to) return upload(c, source_, to->first, to->second);
    return download(c, from->first, from->second, destination_);
  }

  int upload(Client& c, const std::string& local, const std::string& box, std::string path) {
    if (path.empty() || path[0] != '/') path = "/" + path;  // relative to the box's root
    struct stat st;
    if (::stat(local.c_str(), &st) != 0) throw_errno("cp: " + local);
    json there = remote_stat(c, box, path);
    bool into_dir = there.is_object() && there.value("type", "") == "dir";
    Progress progress("copying " + local);
    if (S_ISDIR(st.st_mode)) {
      // Into an existing directory: as a subdirectory of it; else: as the new directory.
      LocalTar tar(local, into_dir ? basename_of(local) + "/" : "");
      c.upload(http::verb::put, sandbox_path(box) + "/files/tar?path=" + query_escape(path),
               "application/x-tar", [&](char* buf, size_t size) {
                 size_t n = tar.fill(buf, size);
                 progress.add(n);
                 return n;
               });
      return 0;
    }
    if (into_dir || (!path.empty() && path.back() == '/')) {
      if (path.back() != '/') path += "/";
      path += basename_of(local);
    }
    sys::UniqueFd fd(::open(local.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cp: opening " + local);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%o", st.st_mode & 07777);
    c.upload(http::verb::put,
             sandbox_path(box) + "/files?path=" + query_escape(path) + "&mode=" + mode,
             "application/octet-stream", [&](char* buf, size_t size) {
               ssize_t n = ::read(fd.get(), buf, size);
               if (n < 0) throw_errno("cp: reading " + local);
               progress.add(static_cast<uint64_t>(n));
               return static_cast<size_t>(n);
             });
    return 0;
  }

  int download(Client& c, const std::string& box, std::string path, const std::string& local) {
    if (path.empty() || path[0] != '/') path = "/" + path;
    json there = remote_stat(c, box, path);
    if (!there.is_object())
      throw not_found("cp: " + box + ":" + path + ": no such file or directory");
    Progress progress("copying " + path);
    struct stat st;
    bool local_is_dir = local != "-" && ::stat(local.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    if (there.value("type", "") == "dir") {
      if (local == "-") {
        c.stream(http::verb::get, sandbox_path(box) + "/files/tar?path=" + query_escape(path),
                 std::nullopt, [&](std::string_view d) { write_out(STDOUT_FILENO, d); });
        return 0;
      }
      std::string dest = local_is_dir ? local + "/" + basename_of(path) : local;
      sys::make_dirs(dest, 0755);
      // Buffered in an unnamed temporary file, then extracted.
      sys::UniqueFd tmp(::open(dest.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      if (!tmp) throw_errno("cp: a temporary file in " + dest);
      c.stream(http::verb::get, sandbox_path(box) + "/files/tar?path=" + query_escape(path),
               std::nullopt, [&](std::string_view d) {
                 if (!sys::write_all(tmp.get(), d)) throw_errno("cp: buffering the download");
                 progress.add(d.size());
               });
      ::lseek(tmp.get(), 0, SEEK_SET);
      LocalUntar(dest).extract(tmp.get());
      return 0;
    }
    if (local == "-") {
      c.stream(http::verb::get, sandbox_path(box) + "/files?path=" + query_escape(path),
               std::nullopt, [&](std::string_view d) { write_out(STDOUT_FILENO, d); });
      return 0;
    }
    std::string dest = local_is_dir ? local + "/" + basename_of(path) : local;
    std::string temp = dest + ".pitbox-cp";
    sys::UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                            there.value("mode", 0644u) & 07777));
    if (!fd) throw_errno("cp: writing " + temp);
    try {
      c.stream(http::verb::get, sandbox_path(box) + "/files?path=" + query_escape(path),
               std::nullopt, [&](std::string_view d) {
                 if (!sys::write_all(fd.get(), d)) throw_errno("cp: writing " + temp);
                 progress.add(d.size());
               });
    } catch (...) {
      ::unlink(temp.c_str());
      throw;
    }
    if (::rename(temp.c_str(), dest.c_str()) != 0) {
      int err = errno;
      ::unlink(temp.c_str());
      throw_errno("cp: " + dest, err);
    }
    return 0;
  }

  GlobalOptions& global_;
  CLI::App *serve_, *create_, *ls_, *inspect_, *exec_, *shell_, *cp_, *rm_, *stop_, *start_,
      *network_, *ports_, *preview_, *port_forward_, *label_, *logs_, *keys_, *keys_create_,
      *keys_ls_, *keys_rm_;
  std::string url_, key_;
  std::string listen_ = "127.0.0.1:7070";
  bool quiet_ = false, json_ = false;
  size_t pool_size_ = 4;
  std::string default_image_;
  std::string storage_ = "overlay";
  std::string network_policy_;
  std::vector<std::string> allow_, deny_, allow_domains_, join_;
  int port_ = 0;
  std::optional<int64_t> expires_;
  bool path_url_ = false, revoke_ = false, public_ = false, private_ = false;
  std::string forward_spec_, forward_address_ = "127.0.0.1";
  std::string network_default_ = "egress";
  std::string network_range_ = "10.88.0.0/16";
  std::string preview_domain_ = "localhost";
  std::string dns_upstream_;
  bool build_base_ = false;
  std::string create_body_name_, image_, cpus_, memory_, pids_, workdir_, user_, state_;
  std::vector<std::string> labels_, env_;
  std::optional<double> auto_stop_, auto_delete_, auto_archive_, timeout_;
  std::string snapshot_, disk_;
  bool ephemeral_ = false, tty_ = false, interactive_ = false, detach_ = false, follow_ = false;
  std::string box_, source_, destination_, session_, key_name_;
  std::vector<std::string> boxes_, changes_;
};

}  // namespace

client::Config client_config(const GlobalOptions& global, const std::string& url,
                             const std::string& key) {
  client::Config config = client::config_from_env(global.state_dir);
  if (!url.empty()) config.url = url;
  if (!key.empty()) config.key = key;
  if (config.key.empty()) {
    throw Error(ErrorCode::unauthenticated,
                "no API key: set PITBOX_API_KEY (or run as a user who can read " +
                    api::admin_key_path(global.state_dir) + ")");
  }
  return config;
}

std::unique_ptr<ClientCommands> add_client_commands(CLI::App& app, GlobalOptions& global) {
  return std::make_unique<Commands>(app, global);
}

}  // namespace pitbox::cli
