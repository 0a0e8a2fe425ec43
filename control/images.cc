#include "control/images.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "build/builder.h"
#include "build/dockerfile.h"
#include "node/blocking.h"
#include "node/ids.h"
#include "storage/layer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/log.h"
#include "sys/process.h"
#include "sys/random.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

std::string_view to_string(Build::Status s) {
  switch (s) {
    case Build::Status::running:
      return "running";
    case Build::Status::succeeded:
      return "succeeded";
    case Build::Status::failed:
      return "failed";
  }
  return "unknown";
}

// What the base image holds beyond Debian's minbase.
constexpr const char* kBasePackages =
    "python3,python3-venv,git,curl,wget,ca-certificates,procps,less,vim-tiny,unzip,xz-utils,jq,"
    "iproute2,file";

}  // namespace

json Build::to_api() const {
  return {{"id", id},
          {"kind", kind},
          {"tags", tags},
          {"status", to_string(status)},
          {"image_id", image_id.empty() ? json() : json(image_id)},
          {"error", error ? error->to_json() : json()},
          {"steps", steps},
          {"cached_steps", cached_steps},
          {"created_at", sys::format_time(created_at)},
          {"finished_at", finished_at ? json(sys::format_time(finished_at)) : json()}};
}

Images::Images(asio::any_io_executor executor, node::NodeClient& node, Sandboxes& sandboxes,
               Options options)
    : executor_(std::move(executor)),
      node_(node),
      sandboxes_(sandboxes),
      options_(std::move(options)),
      pool_(std::make_unique<asio::thread_pool>(2)) {
  sys::make_dirs(options_.state_dir + "/builds", 0700);
  sys::make_dirs(options_.state_dir + "/contexts", 0700);
}

Images::~Images() { pool_->join(); }

template <typename F>
asio::awaitable<std::invoke_result_t<F>> Images::blocking(F fn) {
  return node::run_blocking(*pool_, std::move(fn));
}

std::string Images::default_image() {
  if (!options_.default_image.empty()) return options_.default_image;
  return store().exists(kBaseImage) ? "base" : "host";
}

std::string Images::user_of(const std::string& id) const {
  if (std::string s = sandboxes_.image_user(id); !s.empty()) return s;
  if (building_.count(id)) return "a running build";
  return "";
}

asio::awaitable<std::vector<storage::ImageInfo>> Images::list() {
  auto task = [this] { return store().list(); };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<storage::ImageInfo> Images::inspect(std::string ref) {
  auto task = [this, ref] { return store().inspect(ref); };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<storage::ImageInfo> Images::tag(std::string ref, std::string tag) {
  auto task = [this, ref, tag] { return store().inspect(store().tag(ref, tag)); };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<storage::ImageStore::Removed> Images::remove(std::string ref) {
  // The check of what uses an image reads the sandboxes: on our executor, not the pool.
  co_return store().remove(ref, [this](const std::string& id) { return user_of(id); });
}

asio::awaitable<storage::ImageStore::Pruned> Images::prune() {
  auto in_use = [this](const std::string& id) { return user_of(id); };
  auto pruned = store().prune(in_use);
  // The build cache points at images that may be gone now: drop what no longer resolves.
  std::string cache = store().dir() + "/build-cache";
  for (const auto& e : sys::read_dir(cache)) {
    std::string path = cache + "/" + e.name;
    std::string id;
    try {
      id = sys::read_file(path);
    } catch (const Error&) {
    }
    if (id.empty() || !store().exists(id)) ::unlink(path.c_str());
  }
  co_return pruned;
}

asio::awaitable<std::vector<storage::ImageInfo>> Images::import_file(std::string path,
                                                                     std::string tag) {
  auto task = [this, path, tag] {
    sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    std::vector<storage::ImageInfo> out;
    for (const auto& id : store().import_archive(fd.get(), tag)) out.push_back(store().inspect(id));
    return out;
  };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<void> Images::export_file(std::string ref, std::string path) {
  auto task = [this, ref, path] {
    sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) throw_errno("create " + path);
    store().export_archive(ref, fd.get());
  };
  co_await blocking(std::move(task));
}

asio::awaitable<json> Images::add_context(std::string path) {
  std::string root = options_.state_dir + "/contexts";
  auto task = [root, path] {
    std::string digest = "sha256:" + [&] {
      sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_errno("open " + path);
      sys::Sha256 h;
      h.update_from(fd.get(), path);
      return h.hex();
    }();
    std::string dir = root + "/" + digest.substr(7);
    if (!sys::is_dir(dir)) {
      std::string tmp = root + "/.tmp-" + sys::random_base32(10);
      try {
        if (::mkdir(tmp.c_str(), 0755) != 0) throw_errno("mkdir " + tmp);
        sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("open " + path);
        try {
          storage::unpack_layer(fd.get(), tmp);
        } catch (const Error& e) {
          throw Error(e.code(), "build context: " + e.message(), e.details());
        }
        if (::rename(tmp.c_str(), dir.c_str()) != 0) {
          if (errno != EEXIST && errno != ENOTEMPTY) throw_errno("rename " + tmp);
          sys::remove_tree(tmp);
        }
      } catch (...) {
        sys::remove_tree(tmp);
        throw;
      }
    }
    return json{{"id", digest}};
  };
  co_return co_await blocking(std::move(task));
}

std::shared_ptr<Build> Images::new_build(const std::string& kind, std::vector<std::string> tags) {
  auto b = std::make_shared<Build>();
  b->id = "bld-" + sys::random_base32(12);
  b->kind = kind;
  b->tags = std::move(tags);
  b->created_at = sys::now_ms();
  b->changed = std::make_shared<asio::steady_timer>(executor_);
  b->changed->expires_at(asio::steady_timer::time_point::max());
  builds_[b->id] = b;
  build_order_.push_back(b->id);
  while (build_order_.size() > options_.builds_kept) {
    auto old = builds_.find(build_order_.front());
    if (old != builds_.end() && old->second->status == Build::Status::running) break;
    if (old != builds_.end()) builds_.erase(old);
    ::unlink((options_.state_dir + "/builds/" + build_order_.front() + ".log").c_str());
    build_order_.pop_front();
  }
  return b;
}

void Images::append_log(Build& b, std::string_view text) {
  b.log.append(text);
  // The log on disk too: kept after the daemon restarts.
  sys::UniqueFd fd(::open((options_.state_dir + "/builds/" + b.id + ".log").c_str(),
                          O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (fd) sys::write_all(fd.get(), text);
  b.changed->cancel();
}

void Images::finish(Build& b, std::optional<Error> error, const std::string& image_id) {
  b.finished_at = sys::now_ms();
  if (error) {
    b.status = Build::Status::failed;
    append_log(b, "error: " + error->message() + "\n");
    b.error = std::move(error);
  } else {
    b.status = Build::Status::succeeded;
    b.image_id = image_id;
    append_log(b, "built " + image_id + "\n");
  }
  b.changed->cancel();
  sys::log(error ? sys::LogLevel::warn : sys::LogLevel::info, "build ended",
           {{"build", b.id}, {"status", to_string(b.status)}, {"image", image_id}});
}

std::shared_ptr<Build> Images::get_build(const std::string& id) const {
  auto it = builds_.find(id);
  if (it == builds_.end()) throw not_found("build \"" + id + "\" not found");
  return it->second;
}

std::vector<std::shared_ptr<Build>> Images::builds() const {
  std::vector<std::shared_ptr<Build>> out;
  for (auto it = build_order_.rbegin(); it != build_order_.rend(); ++it) {
    if (auto b = builds_.find(*it); b != builds_.end()) out.push_back(b->second);
  }
  return out;
}

asio::awaitable<void> Images::wait_build(std::shared_ptr<Build> build, size_t offset) {
  while (build->log.size() <= offset && build->status == Build::Status::running) {
    auto timer = build->changed;
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // cancel() wakes every waiter; the timer stays armed for the next ones.
    timer->expires_at(asio::steady_timer::time_point::max());
  }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile builds: RUN steps in boxes of this node

class BuildHost final : public build::BuildHost {
 public:
  BuildHost(Images& images, std::shared_ptr<Build> b) : images_(images), b_(std::move(b)) {}
  ~BuildHost() override { standing_on(""); }

  asio::awaitable<void> log(std::string text) override {
    images_.append_log(*b_, text);
    co_return;
  }

  asio::awaitable<void> offload(std::function<void()> fn) override {
    co_await images_.blocking(std::move(fn));
  }

  void standing_on(const std::string& id) override {
    if (!current_.empty()) {
      auto it = images_.building_.find(current_);
      if (it != images_.building_.end()) images_.building_.erase(it);
    }
    current_ = id;
    if (!id.empty()) images_.building_.insert(id);
  }

  asio::awaitable<std::pair<int, storage::LayerDesc>> run(const std::string& image_id,
                                                          const build::RunStep& step) override {
    node::NodeClient& node = images_.node_;
    node::BoxConfig config;
    config.id = node::new_box_id();
    config.image = image_id;
    config.hostname = "build-" + config.id.substr(3);
    std::exception_ptr failed;
    std::pair<int, storage::LayerDesc> result;
    bool made = false;
    try {
      co_await node.create(config);
      made = true;
      auto channel = node.channel(config.id);
      if (!channel) throw internal_error("the build box " + config.id + " did not start");
      proto::SpawnRequest spawn;
      spawn.argv = step.argv;
      spawn.env = step.env;
      spawn.cwd = step.workdir;
      spawn.create_cwd = true;
      spawn.user = step.user;
      spawn.window = 1 << 20;
      auto process = co_await channel->spawn(spawn);
      for (;;) {
        node::ProcessEvent e = co_await process->next();
        if (e.kind == node::ProcessEvent::Kind::exit) {
          result.first = e.status.shell_code();
          break;
        }
        images_.append_log(*b_, e.data);
      }
      co_await node.stop(config.id, std::chrono::milliseconds(0));
      if (result.first == 0) result.second = co_await node.commit(config.id);
    } catch (...) {
      failed = std::current_exception();
    }
    if (made) {
      try {
        co_await node.destroy(config.id);
      } catch (const std::exception& e) {
        sys::log(sys::LogLevel::warn, "could not remove a build box",
                 {{"box", config.id}, {"error", e.what()}});
      }
    }
    if (failed) std::rethrow_exception(failed);
    co_return result;
  }

 private:
  Images& images_;
  std::shared_ptr<Build> b_;
  std::string current_;
};

std::shared_ptr<Build> Images::start_build(BuildRequest request) {
  // A Dockerfile that does not parse is a bad request, not a failed build.
  build::parse_dockerfile(request.dockerfile);
  for (const auto& t : request.tags) storage::ImageStore::normalize_tag(t);
  if (!request.context.empty()) {
    std::string hex;
    try {
      hex = storage::digest_hex(request.context);
    } catch (const Error&) {
    }
    if (hex.empty() || !sys::is_dir(options_.state_dir + "/contexts/" + hex)) {
      throw Error(ErrorCode::not_found,
                  "build context \"" + request.context + "\" not found (upload it first)",
                  {{"field", "context"}});
    }
  }
  auto b = new_build("dockerfile", request.tags);
  asio::co_spawn(executor_, run_dockerfile(b, std::move(request)), asio::detached);
  return b;
}

asio::awaitable<void> Images::run_dockerfile(std::shared_ptr<Build> b, BuildRequest request) {
  build::BuildOptions options;
  options.dockerfile = request.dockerfile;
  if (!request.context.empty())
    options.context_dir = options_.state_dir + "/contexts/" + request.context.substr(7);
  options.tags = request.tags;
  options.args = request.args;
  options.no_cache = request.no_cache;
  std::optional<Error> error;
  std::string image_id;
  try {
    BuildHost host(*this, b);
    build::BuildResult r = co_await build::build_image(store(), options, host);
    image_id = r.image_id;
    b->steps = r.steps;
    b->cached_steps = r.cached;
  } catch (const Error& e) {
    error = e;
  } catch (const std::exception& e) {
    error = internal_error(e.what());
  }
  finish(*b, error, image_id);
}

// ---------------------------------------------------------------------------------------------
// The Debian base image

std::shared_ptr<Build> Images::start_base_build() {
  if (base_build_ && base_build_->status == Build::Status::running) return base_build_;
  auto b = new_build("base", {kBaseImage, "base:bookworm"});
  base_build_ = b;
  asio::co_spawn(executor_, run_base(b), asio::detached);
  return b;
}

void Images::ensure_base_in_background() {
  if (store().exists(kBaseImage)) return;
  auto b = start_base_build();
  sys::log(sys::LogLevel::info, "building the base image in the background", {{"build", b->id}});
}

asio::awaitable<void> Images::run_base(std::shared_ptr<Build> b) {
  std::optional<Error> error;
  std::string image_id;
  // mmdebstrap's output comes from another thread: handed over on our executor.
  auto sink = [this, b](std::string text) {
    asio::post(executor_, [this, b, text = std::move(text)] { append_log(*b, text); });
  };
  std::string mirror = options_.debian_mirror;
  auto task = [this, sink, mirror]() -> std::string {
    if (!sys::exists("/usr/bin/mmdebstrap")) {
      throw Error(ErrorCode::unavailable,
                  "building the base image needs mmdebstrap (apt-get install mmdebstrap)");
    }
    std::string tmp = store().make_tmp_dir("base");
    try {
      std::string out = tmp + "/rootfs.tar.zst";
      std::vector<std::string> argv = {
          "/usr/bin/mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
          // No device nodes: boxes get their own /dev.
          "--skip=output/dev", std::string("--include=") + kBasePackages,
          "--aptopt=Acquire::Retries \"3\"", "--dpkgopt=path-exclude=/usr/share/man/*",
          "--dpkgopt=path-exclude=/usr/share/doc/*",
          "--dpkgopt=path-include=/usr/share/doc/*/copyright",
          "--customize-hook=echo pitbox > \"$1/etc/hostname\"", "bookworm", out};
      if (!mirror.empty()) argv.push_back(mirror);
      int pipefd[2];
      if (::pipe2(pipefd, O_CLOEXEC) != 0) throw_errno("pipe2");
      sys::UniqueFd r(pipefd[0]), w(pipefd[1]);
      pid_t pid = ::fork();
      if (pid < 0) throw_errno("fork");
      if (pid == 0) {
        ::dup2(w.get(), 1);
        ::dup2(w.get(), 2);
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        ::setsid();
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
      }
      w.reset();
      sink("running: mmdebstrap --variant=minbase --include=" + std::string(kBasePackages) +
           " bookworm\n");
      char buf[4096];
      for (;;) {
        ssize_t n = ::read(r.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        sink(std::string(buf, static_cast<size_t>(n)));
      }
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw Error(ErrorCode::unavailable,
                    "mmdebstrap failed (" + sys::ExitStatus::from_wait_status(status).describe() +
                        "); its output is in the build log");
      }
      sink("importing the root filesystem\n");
      sys::UniqueFd in(::open(out.c_str(), O_RDONLY | O_CLOEXEC));
      if (!in) throw_errno("open " + out);
      storage::LayerDesc layer = store().add_layer(in.get());
      storage::ImageDoc d;
      d.layers = {layer};
      storage::ImageConfig c;
      c.env = {storage::kDefaultPath, "LANG=C.UTF-8"};
      c.workdir = "/root";
      c.cmd = {"/bin/bash"};
      c.labels["org.opencontainers.image.description"] =
          "Debian bookworm (minbase) with python3, git, curl and common tools";
      storage::config_to_oci(c, d.config);
      std::string id = store().put(d, {kBaseImage, "base:bookworm"});
      sys::remove_tree(tmp);
      return id;
    } catch (...) {
      sys::remove_tree(tmp);
      throw;
    }
  };
  auto started = std::chrono::steady_clock::now();
  try {
    image_id = co_await blocking(std::move(task));
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    append_log(*b, "base image built in " + std::to_string(static_cast<int>(secs)) + " s\n");
  } catch (const Error& e) {
    error = e;
  } catch (const std::exception& e) {
    error = internal_error(e.what());
  }
  finish(*b, error, image_id);
}

}  // namespace pitbox::control
