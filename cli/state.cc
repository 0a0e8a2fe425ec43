// pitbox pause | resume | resize | snapshot | fork | restore | archive: a box's state through the
// daemon's API. Operations that can take a while say what they do on stderr (when it is a
// terminal) and how long it took.
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "cli/commands.h"
#include "cli/util.h"

namespace pitbox::cli {

namespace {

using client::Client;
using client::query_escape;
using nlohmann::json;
namespace http = boost::beast::http;

// "forking sb-... into 10 ..." on a terminal, then the time it took.
class Step {
 public:
  explicit Step(const std::string& what)
      : shown_(::isatty(STDERR_FILENO)), began_(std::chrono::steady_clock::now()) {
    if (shown_) std::fprintf(stderr, "%s ...", what.c_str());
  }
  ~Step() {
    if (!shown_) return;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
    std::fprintf(stderr, ok_ ? " done in %.2f s\n" : " failed\n", s);
  }
  void done() { ok_ = true; }

 private:
  bool shown_;
  bool ok_ = false;
  std::chrono::steady_clock::time_point began_;
};

class StateCommands final : public ClientCommands {
 public:
  StateCommands(CLI::App& app, GlobalOptions& global, bool full) : global_(global) {
    pause_ =
        app.add_subcommand("pause", "Freeze every process of sandboxes (memory kept, no CPU used)");
    resume_ = app.add_subcommand("resume", "Let paused sandboxes go on");
    resize_ = app.add_subcommand("resize", "Change a sandbox's limits");
    snapshot_ = app.add_subcommand(
        "snapshot", "Snapshot a sandbox's files (snapshot BOX), or list / remove snapshots");
    fork_ = app.add_subcommand(
        "fork", "Fork a sandbox into new started ones with the same files; prints their ids");
    restore_ = app.add_subcommand(
        "restore", "Roll a sandbox back to one of its snapshots (a running one restarts)");
    archive_ = app.add_subcommand(
        "archive", "Pack stopped sandboxes' files away; `pitbox start` brings them back");
    if (!full) return;
    auto with_client = [this](CLI::App* s) {
      s->add_option("--url", url_, "API URL (default http://127.0.0.1:7070)")
          ->envname("PITBOX_API_URL");
      s->add_option("--key", key_, "API key (default: the local daemon's admin key)")
          ->envname("PITBOX_API_KEY");
      return s;
    };
    with_client(pause_);
    pause_->add_option("boxes", boxes_, "Sandbox ids or names")->required();
    with_client(resume_);
    resume_->add_option("boxes", boxes_, "Sandbox ids or names")->required();

    with_client(resize_);
    resize_->add_option("box", box_, "Sandbox id or name")->required();
    resize_->add_option("--cpus", cpus_, "CPU limit, e.g. 0.5 or 2");
    resize_->add_option("--memory,-m", memory_, "Memory limit, e.g. 512m");
    resize_->add_option("--pids", pids_, "Most processes at once");
    resize_->add_option("--disk", disk_, "Disk limit of its files, e.g. 10g (btrfs storage)");

    with_client(snapshot_);
    snapshot_->add_option("box", box_, "Sandbox id or name");
    snapshot_->add_option("--name", name_, "A unique name (default: <sandbox>-<n>)");
    snapshot_->add_flag("--json", json_, "Print JSON");
    snapshot_->require_subcommand(0, 1);
    snapshot_ls_ = with_client(snapshot_->add_subcommand("ls", "List snapshots"));
    snapshot_ls_->add_option("box", box_, "Only those of this sandbox");
    snapshot_ls_->add_flag("--json", json_, "Print JSON");
    snapshot_ls_->add_flag("--quiet,-q", quiet_, "Print only ids");
    snapshot_rm_ = with_client(snapshot_->add_subcommand("rm", "Delete snapshots"));
    snapshot_rm_->add_option("snapshots", boxes_, "Snapshot ids or names")->required();

    with_client(fork_);
    fork_->add_option("box", box_, "Sandbox id or name")->required();
    fork_->add_option("--count,-n", count_, "How many (default 1, or one per --name)");
    fork_->add_option("--name", names_, "Names of the new sandboxes (repeatable)");
    fork_->add_option("--label,-l", labels_, "KEY=VALUE for the new ones (default: the parent's)");
    fork_->add_flag("--json", json_, "Print JSON");

    with_client(restore_);
    restore_->add_option("box", box_, "Sandbox id or name")->required();
    restore_->add_option("snapshot", snapshot_ref_, "Snapshot id or name")->required();

    with_client(archive_);
    archive_->add_option("boxes", boxes_, "Sandbox ids or names")->required();
  }

  bool chosen() const override {
    if (!snapshot_ls_) return false;  // not made in full: not asked for
    for (CLI::App* s : {pause_, resume_, resize_, snapshot_, fork_, restore_, archive_}) {
      if (*s) return true;
    }
    return false;
  }

  int run(const std::vector<std::string>&) override {
    try {
      Client c(client_config(global_, url_, key_));
      if (*pause_) return each(c, "/pause");
      if (*resume_) return each(c, "/resume");
      if (*archive_) return each(c, "/archive", "archiving");
      if (*resize_) return resize(c);
      if (*snapshot_ls_) return snapshot_ls(c);
      if (*snapshot_rm_) return each(c, "", "", http::verb::delete_, true);
      if (*snapshot_) return snapshot(c);
      if (*fork_) return fork(c);
      if (*restore_) {
        Step step("restoring " + box_ + " to " + snapshot_ref_);
        json body = {{"snapshot", snapshot_ref_}};
        c.call(http::verb::post, sandbox_path(box_) + "/restore", body);
        step.done();
        std::cout << box_ << "\n";
        return 0;
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "pitbox: %s\n", e.message().c_str());
      return kExitClientError;
    }
    return kExitClientError;
  }

 private:
  // `method` on the path of each of boxes_ (sandboxes, or snapshots with `snapshots`).
  int each(Client& c, const std::string& suffix, const std::string& doing = "",
           http::verb method = http::verb::post, bool snapshots = false) {
    int rc = 0;
    for (const auto& ref : boxes_) {
      try {
        std::optional<Step> step;
        if (!doing.empty()) step.emplace(doing + " " + ref);
        c.call(method,
               (snapshots ? "/v1/snapshots/" + query_escape(ref) : sandbox_path(ref)) + suffix);
        if (step) step->done();
        std::cout << ref << "\n";
      } catch (const Error& e) {
        std::fprintf(stderr, "pitbox: %s: %s\n", ref.c_str(), e.message().c_str());
        rc = kExitClientError;
      }
    }
    return rc;
  }

  int resize(Client& c) {
    json body = json::object();
    if (!cpus_.empty()) {
      char* end = nullptr;
      double cpus = std::strtod(cpus_.c_str(), &end);
      if (end == cpus_.c_str() || *end) {
        throw invalid_argument("--cpus \"" + cpus_ + "\" is not a number");
      }
      body["cpus"] = cpus;
    }
    if (!memory_.empty()) body["memory"] = memory_;
    if (!disk_.empty()) body["disk"] = disk_;
    if (pids_) body["pids"] = *pids_;
    if (body.empty()) throw invalid_argument("resize needs --cpus, --memory, --pids or --disk");
    c.call(http::verb::post, sandbox_path(box_) + "/resize", body);
    std::cout << box_ << "\n";
    return 0;
  }

  int snapshot(Client& c) {
    if (box_.empty()) {
      throw invalid_argument("snapshot needs a sandbox (pitbox snapshot BOX), or ls / rm");
    }
    json body = json::object();
    if (!name_.empty()) body["name"] = name_;
    Step step("snapshotting " + box_);
    json snap = c.call(http::verb::post, sandbox_path(box_) + "/snapshots", body);
    step.done();
    if (json_) {
      std::cout << snap.dump(2) << "\n";
    } else {
      std::cout << snap["id"].get<std::string>() << "\t" << snap["name"].get<std::string>() << "\n";
    }
    return 0;
  }

  int snapshot_ls(Client& c) {
    std::string query = "?limit=1000" + (box_.empty() ? "" : "&sandbox=" + query_escape(box_));
    json all = json::array();
    std::string cursor;
    do {
      json page = c.call(http::verb::get,
                         "/v1/snapshots" + query + (cursor.empty() ? "" : "&cursor=" + cursor));
      for (auto& item : page["items"]) all.push_back(item);
      cursor = page["next_cursor"].is_string() ? page["next_cursor"].get<std::string>() : "";
    } while (!cursor.empty());
    if (json_) {
      std::cout << all.dump(2) << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : all) {
      if (quiet_) {
        std::cout << s["id"].get<std::string>() << "\n";
        continue;
      }
      rows.push_back({s["id"].get<std::string>(), s["name"].get<std::string>(),
                      s["sandbox_id"].get<std::string>(), s["image"].get<std::string>(),
                      sys::format_size(s["size"].get<uint64_t>()), ago(s["created_at"])});
    }
    if (!quiet_) print_table({"ID", "NAME", "SANDBOX", "IMAGE", "SIZE", "CREATED"}, rows);
    return 0;
  }

  int fork(Client& c) {
    json body = json::object();
    if (count_) body["count"] = *count_;
    if (!names_.empty()) body["names"] = names_;
    if (!labels_.empty()) {
      json labels = json::object();
      for (const auto& l : labels_) {
        auto eq = l.find('=');
        if (eq == std::string::npos || eq == 0) {
          throw invalid_argument("--label \"" + l + "\" must look like KEY=VALUE");
        }
        labels[l.substr(0, eq)] = l.substr(eq + 1);
      }
      body["labels"] = labels;
    }
    size_t n = count_ ? *count_ : (names_.empty() ? 1 : names_.size());
    Step step("forking " + box_ + " into " + std::to_string(n));
    json made = c.call(http::verb::post, sandbox_path(box_) + "/fork", body);
    step.done();
    if (json_) {
      std::cout << made["items"].dump(2) << "\n";
      return 0;
    }
    for (const auto& sb : made["items"]) std::cout << sb["id"].get<std::string>() << "\n";
    return 0;
  }

  GlobalOptions& global_;
  std::string url_, key_;
  CLI::App *pause_, *resume_, *resize_, *snapshot_, *fork_, *restore_, *archive_;
  CLI::App *snapshot_ls_ = nullptr, *snapshot_rm_ = nullptr;
  std::vector<std::string> boxes_, names_, labels_;
  std::string box_, name_, snapshot_ref_, cpus_, memory_, disk_;
  std::optional<int64_t> pids_, count_;
  bool json_ = false, quiet_ = false;
};

}  // namespace

bool names_state_command(const char* arg) {
  for (const char* name : {"pause", "resume", "resize", "snapshot", "fork", "restore", "archive"}) {
    if (std::strcmp(arg, name) == 0) return true;
  }
  return false;
}

std::unique_ptr<ClientCommands> add_state_commands(CLI::App& app, GlobalOptions& global,
                                                   bool full) {
  return std::make_unique<StateCommands>(app, global, full);
}

}  // namespace pitbox::cli
