#include "init/process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "init/signals.h"
#include "init/users.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/raw_syscall.h"

namespace pitbox::init {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

enum Stage : int { kStageIds = 1, kStageCwd = 2, kStageExec = 3, kStageTty = 4 };

struct ChildReport {
  int stage;
  int err;
};

// Everything the child needs, prepared by the parent: the child only makes system calls.
struct ChildArgs {
  const char* path;
  char* const* argv;
  char* const* envp;
  int fds[3];
  bool tty;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t ngroups;
  const char* cwd;
  int report_fd;
};

[[noreturn]] void child_fail(const ChildArgs* a, int stage, long rc) {
  ChildReport r{stage, static_cast<int>(-rc)};
  sys::raw::call(SYS_write, a->report_fd, &r, sizeof r);
  sys::raw::call(SYS_exit_group, 127);
  __builtin_unreachable();
}

int child_main(void* arg) {
  using sys::raw::call;
  const auto* a = static_cast<const ChildArgs*>(arg);
  // Default dispositions for what init changed (it reset all others when it started) and an
  // empty mask.
  struct {
    void* handler;
    unsigned long flags;
    void* restorer;
    uint64_t mask;
  } dfl{};
  dfl.handler = nullptr;  // SIG_DFL
  for (int sig : kInitSignals) call(SYS_rt_sigaction, sig, &dfl, 0, 8);
  uint64_t empty = 0;
  call(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8);

  call(SYS_setsid);
  if (a->tty) {
    long rc = call(SYS_ioctl, a->fds[0], TIOCSCTTY, 0);
    if (rc < 0) child_fail(a, kStageTty, rc);
  }
  for (int i = 0; i < 3; ++i) call(SYS_dup2, a->fds[i], i);
  long rc = call(SYS_setgroups, a->ngroups, a->groups);
  if (rc < 0 && (a->ngroups || rc != -EPERM)) child_fail(a, kStageIds, rc);
  if ((rc = call(SYS_setresgid, a->gid, a->gid, a->gid)) < 0) child_fail(a, kStageIds, rc);
  if ((rc = call(SYS_setresuid, a->uid, a->uid, a->uid)) < 0) child_fail(a, kStageIds, rc);
  if ((rc = call(SYS_chdir, a->cwd)) < 0) child_fail(a, kStageCwd, rc);
  call(SYS_umask, 022);
  rc = call(SYS_execve, a->path, a->argv, a->envp);
  child_fail(a, kStageExec, rc);
}

// The environment the process gets: defaults, then the request's variables (later wins).
std::vector<std::string> build_env(const proto::SpawnRequest& req, const Identity& id) {
  std::map<std::string, std::string> vars;
  std::vector<std::string> order;
  auto set = [&](const std::string& kv) {
    auto eq = kv.find('=');
    std::string key = eq == std::string::npos ? kv : kv.substr(0, eq);
    if (key.empty())
      throw invalid_argument("environment variable with an empty name: \"" + kv + "\"");
    if (!vars.count(key)) order.push_back(key);
    vars[key] = kv;
  };
  set(std::string("PATH=") + kDefaultPath);
  set("HOME=" + id.home);
  if (!id.name.empty()) {
    set("USER=" + id.name);
    set("LOGNAME=" + id.name);
  }
  if (req.tty) set("TERM=xterm");
  for (const auto& kv : req.env) {
    if (kv.find('=') == std::string::npos) {
      throw invalid_argument("environment entry \"" + kv + "\" is not KEY=value");
    }
    set(kv);
  }
  std::vector<std::string> out;
  for (const auto& k : order) out.push_back(vars[k]);
  return out;
}

std::string env_value(const std::vector<std::string>& env, const std::string& key) {
  for (const auto& kv : env) {
    if (kv.compare(0, key.size() + 1, key + "=") == 0) return kv.substr(key.size() + 1);
  }
  return {};
}

// execvp's search, done before the child exists, with the PATH the process will have.
std::string find_executable(const std::string& name, const std::string& path_var,
                            const std::string& cwd) {
  if (name.empty()) throw invalid_argument("the command is an empty string");
  auto usable = [&](const std::string& candidate, bool& denied) {
    std::string full = candidate[0] == '/' ? candidate : sys::join_path(cwd, candidate);
    struct stat st;
    if (::stat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    if (!(st.st_mode & 0111)) {
      denied = true;
      return false;
    }
    return true;
  };
  if (name.find('/') != std::string::npos) return name;  // the kernel will say what is wrong
  bool denied = false;
  std::string p = path_var.empty() ? kDefaultPath : path_var;
  size_t start = 0;
  for (;;) {
    size_t end = p.find(':', start);
    std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (usable(candidate, denied)) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (denied) {
    throw Error(ErrorCode::permission_denied, "\"" + name + "\" is in $PATH but not executable");
  }
  throw not_found("executable \"" + name + "\" not found in $PATH (" + p + ")");
}

struct Pipe {
  sys::UniqueFd read, write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return {sys::UniqueFd(fds[0]), sys::UniqueFd(fds[1])};
}

void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw_errno("fcntl O_NONBLOCK");
}

// Memory for the child's stack until it execs; init is single threaded and the parent waits.
alignas(64) char g_child_stack[256 * 1024];

}  // namespace

std::unique_ptr<Process> spawn_process(uint32_t stream, const proto::SpawnRequest& req,
                                       const SpawnOptions& options) {
  if (req.argv.empty()) throw invalid_argument("spawn: argv is empty");
  Identity id = resolve_identity(options.rootfd, req.user);
  std::string cwd = req.cwd.empty() ? id.home : req.cwd;
  if (cwd[0] != '/') throw invalid_argument("working directory \"" + cwd + "\" is not absolute");
  if (req.create_cwd) {
    std::string prefix;
    size_t pos = 1;
    while (pos <= cwd.size()) {
      size_t end = cwd.find('/', pos);
      if (end == std::string::npos) end = cwd.size();
      prefix = cwd.substr(0, end);
      if (end > pos) {
        auto [parent, name] = sys::split_parent(prefix);
        sys::UniqueFd dir = sys::open_in_root(options.rootfd, parent, O_PATH | O_DIRECTORY);
        if (!dir) throw_errno("working directory " + parent);
        if (::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
          throw_errno("creating working directory " + prefix);
        }
      }
      pos = end + 1;
    }
  }
  std::vector<std::string> env = build_env(req, id);
  std::string path = find_executable(req.argv[0], env_value(env, "PATH"), cwd);

  auto proc = std::make_unique<Process>();
  proc->stream = stream;
  proc->argv = req.argv;
  proc->tty = req.tty;
  sys::UniqueFd child_in, child_out, child_err;
  if (req.tty) {
    // ptmx of the box's own devpts, and the peer through the master: no path the box could
    // have changed.
    if (options.devpts < 0) throw Error(ErrorCode::unavailable, "no devpts for a terminal");
    sys::UniqueFd master(::openat(options.devpts, "ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) throw_errno("opening a pseudo-terminal");
    int unlock = 0;
    if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) throw_errno("unlocking the terminal");
    sys::UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) throw_errno("opening the terminal's peer");
    winsize ws{};
    ws.ws_row = req.rows ? req.rows : 24;
    ws.ws_col = req.cols ? req.cols : 80;
    ::ioctl(master.get(), TIOCSWINSZ, &ws);
    if (id.uid != 0) (void)::fchown(slave.get(), id.uid, static_cast<gid_t>(-1));
    proc->input = std::move(master);
    child_in = std::move(slave);
  } else {
    if (req.stdin) {
      Pipe p = make_pipe();
      proc->input = std::move(p.write);
      child_in = std::move(p.read);
    } else {
      child_in = sys::UniqueFd(::fcntl(options.devnull, F_DUPFD_CLOEXEC, 3));
      if (!child_in) throw_errno("/dev/null");
    }
    Pipe out = make_pipe(), err = make_pipe();
    proc->output = std::move(out.read);
    proc->errors = std::move(err.read);
    child_out = std::move(out.write);
    child_err = std::move(err.write);
  }
  Pipe report = make_pipe();

  std::vector<std::string> argv_s = req.argv;
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  ChildArgs args{};
  args.path = path.c_str();
  args.argv = argv.data();
  args.envp = envp.data();
  args.tty = req.tty;
  args.fds[0] = child_in.get();
  args.fds[1] = req.tty ? child_in.get() : child_out.get();
  args.fds[2] = req.tty ? child_in.get() : child_err.get();
  args.uid = id.uid;
  args.gid = id.gid;
  args.groups = id.groups.data();
  args.ngroups = id.groups.size();
  args.cwd = cwd.c_str();
  args.report_fd = report.write.get();

  pid_t pid = ::clone(child_main, g_child_stack + sizeof g_child_stack,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  if (pid < 0) throw_errno("clone");
  // The child has exec'd (closing the report pipe) or failed; either way it is done with args.
  report.write.reset();
  ChildReport r{};
  ssize_t n;
  do {
    n = ::read(report.read.get(), &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof r)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string what = r.stage == kStageCwd   ? "working directory \"" + cwd + "\""
                       : r.stage == kStageIds ? "switching to user \"" + req.user + "\""
                       : r.stage == kStageTty ? "setting the controlling terminal"
                                              : "running \"" + path + "\"";
    if (r.stage == kStageCwd && r.err == ENOENT) throw not_found(what + " does not exist");
    if (r.stage == kStageExec && r.err == ENOENT) {
      throw not_found(what + ": no such file (or its interpreter is missing)");
    }
    throw Error(error_code_from_errno(r.err), what + ": " + std::strerror(r.err));
  }
  proc->pid = pid;
  if (proc->input) set_nonblocking(proc->input.get());
  if (proc->output) set_nonblocking(proc->output.get());
  if (proc->errors) set_nonblocking(proc->errors.get());
  if (req.tty) {
    proc->errors_done = true;  // a terminal has one output stream
  }
  return proc;
}

}  // namespace pitbox::init
